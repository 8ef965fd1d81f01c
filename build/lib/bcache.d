build/lib/bcache.o: lib/bcache.c lib/bcache.h lib/verify.h \
 lib/mendfs_format.h lib/dev.h lib/log.h
lib/bcache.h:
lib/verify.h:
lib/mendfs_format.h:
lib/dev.h:
lib/log.h:
