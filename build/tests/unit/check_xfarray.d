build/tests/unit/check_xfarray.o: tests/unit/check_xfarray.c \
 lib/xfarray.h
lib/xfarray.h:
