build/lib/verify.o: lib/verify.c lib/verify.h lib/mendfs_format.h \
 lib/crc32c.h lib/byteorder.h lib/log.h
lib/verify.h:
lib/mendfs_format.h:
lib/crc32c.h:
lib/byteorder.h:
lib/log.h:
