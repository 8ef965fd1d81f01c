build/lib/xfarray.o: lib/xfarray.c lib/xfarray.h
lib/xfarray.h:
