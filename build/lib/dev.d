build/lib/dev.o: lib/dev.c lib/dev.h lib/log.h /usr/include/blkid/blkid.h
lib/dev.h:
lib/log.h:
/usr/include/blkid/blkid.h:
