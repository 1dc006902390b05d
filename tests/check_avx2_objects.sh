#!/bin/sh
# Fails when an object compiled for AVX2, AVX-512 or AMX (kernels/cpu/*_avx2.cpp, *_avx512.cpp,
# *_avx512bf16.cpp and *_amx.cpp, built with -mavx2 -mfma, -mavx512f, -mavx512bf16, and -mamx-tile) defines
# a weak symbol: a template or inline function instantiated there is a copy the linker may keep
# for the whole program, which would then run AVX2 instructions on a CPU without them. Those files
# must hold only their own functions (internal or explicitly named), entered after the CPU check.
#   check_avx2_objects.sh OBJECT...   (the objects of bam_kernels_cpu; others are skipped)
status=0
checked=0
for object in "$@"; do
  case "$object" in *_avx2* | *_avx512* | *_amx*) ;; *) continue ;; esac
  checked=$((checked + 1))
  if ! symbols=$(nm -C --defined-only "$object"); then
    echo "check_avx2_objects: nm cannot read $object"
    status=1
    continue
  fi
  # (DW.ref.__gxx_personality_v0 is the exception-handling personality pointer: data, no code.)
  weak=$(printf '%s\n' "$symbols" | awk '$2 ~ /^[WVu]$/ && $3 !~ /^DW\.ref\./')
  if [ -n "$weak" ]; then
    echo "$object defines weak symbols, which the linker may keep for non-AVX2 code:"
    echo "$weak"
    status=1
  fi
done
if [ "$checked" = 0 ]; then
  echo "check_avx2_objects: no *_avx2 object among the arguments"
  exit 1
fi
[ $status = 0 ] && echo "check_avx2_objects: $checked AVX2/AVX-512/AMX objects, no weak symbols"
exit $status
