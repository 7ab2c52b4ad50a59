/*
 * Test-only stand-in for bcryptprimitives.dll, which Wine 8.0 lacks.
 *
 * Rust's standard library (1.78+) imports ProcessPrng from
 * bcryptprimitives.dll on Windows; every supported Windows (10 / Server
 * 2016 and later) ships that DLL. Wine 8.0 does not, so an unpatched Wine
 * prefix cannot load any Rust program. scripts/test-windows.sh builds this
 * file with MinGW and copies the DLL into a throwaway prefix's system32.
 * Never shipped: not part of the MSI or the zip.
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len)
{
    while (len > 0) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0)
            return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
