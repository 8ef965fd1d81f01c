#!/bin/bash
# t_fieldfuzz.sh — a sample of the metadata field fuzzing (tests/tools/fieldfuzz.sh; the full
# walk is `make fieldfuzz`): about 50 cases, every 127th of the list of fields × verbs of a
# populated image (a prime stride, so that the verbs rotate over the fields).  Each fuzzed
# copy must be refused cleanly or mount; mounted, the scrub must find what the offline
# check finds, and no daemon, scrub or mendfs_db may crash or hang.  The table goes to
# $O/fieldfuzz-check.tsv.
BIN=${BIN:?BIN must name the directory of the built programs}
O=${O:-build}
exec bash "$(dirname "$0")/../tools/fieldfuzz.sh" -s 127 -o "$O/fieldfuzz-check.tsv"
