# Rewrites a .cu or .cuh file for the CUDA emulator (kernels/cuda/emulator/cuda_emulator.h): every
# launch `kernel<<<grid, block, bytes, stream>>>(args)` becomes
# `kernel ^ ::bam::emu::launch(grid, block, bytes, stream)(args)`, which a host compiler accepts
# and which runs the kernel on the CPU. Lines keep their numbers and a #line names the original
# file, so compiler messages and the emulator's reports point at the real source.
# Usage: cmake -DINPUT=<file> -DOUTPUT=<file> -P translate_launches.cmake
file(READ "${INPUT}" text)
string(REPLACE "<<<" " ^ ::bam::emu::launch(__FILE__, __LINE__, " text "${text}")
string(REPLACE ">>>" ")" text "${text}")
file(WRITE "${OUTPUT}.tmp" "#line 1 \"${INPUT}\"\n${text}")
file(RENAME "${OUTPUT}.tmp" "${OUTPUT}")
