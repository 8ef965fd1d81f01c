build/lib/crc32c.o: lib/crc32c.c lib/crc32c.h
lib/crc32c.h:
