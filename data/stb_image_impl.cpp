// The one translation unit that compiles stb_image (the fallback decoder for JPEGs our decoder does
// not handle, PNG and BMP). Its own warnings are silenced here and nowhere else.
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#endif
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
// The formats stb decodes here: JPEGs our decoder passes on (progressive, 12-bit, CMYK...), PNG and
// BMP. Not PNM (pnm_decoder.cpp: stb's 16-bit path read past its buffer, CVE-2021-42716), nor
// HDR (a truncated file looped forever, CVE-2021-42715), GIF, PSD, PIC or TGA, which torchvision's
// folders never hold.
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#include <stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif
