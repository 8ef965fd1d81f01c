build/lib/geom.o: lib/geom.c lib/geom.h lib/mendfs_format.h \
 lib/byteorder.h lib/log.h
lib/geom.h:
lib/mendfs_format.h:
lib/byteorder.h:
lib/log.h:
