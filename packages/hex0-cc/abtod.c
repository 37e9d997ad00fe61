/* abtod for the hex0 root of the diverse double compilation of TinyCC
   (packages/hex0-cc, docs/ddc.md), written for imgrep in place of GNU Mes
   0.24.2's lib/mes/abtod.c. That one reads the integer part into a 32-bit
   long (18446744073709551616.0 becomes 0.0) and the fraction as an integer
   (2.95 becomes 11.5). TinyCC reads every decimal floating constant through
   strtod, which is abtod in Mes' libc: a TinyCC linked against it compiles
   other constants than one linked against glibc or musl. Here the digits
   are accumulated in long double (exact while below 2^64) and scaled by one
   power of the base (exact up to 10^27): exact for the constants of TinyCC's
   and Mes' sources, rounded twice for others; not a correctly rounded
   strtod in general. */
#include <mes/lib.h>
#include <ctype.h>

static int
abtod_digit (int c, int base)
{
  int v = -1;
  if (c >= '0' && c <= '9')
    v = c - '0';
  else if (c >= 'a' && c <= 'z')
    v = c - 'a' + 10;
  else if (c >= 'A' && c <= 'Z')
    v = c - 'A' + 10;
  if (v >= base)
    v = -1;
  return v;
}

double
abtod (char const **p, int base)
{
  char const *s = *p;
  long double m = 0;
  long double b;
  long double f;
  long double power = 1;
  int negative = 0;
  int e = 0;
  int n;
  int v;
  if (!base)
    base = 10;
  b = base;
  while (isspace (*s))
    s++;
  if (*s == '+' || *s == '-')
    negative = *s++ == '-';
  for (; (v = abtod_digit (*s, base)) >= 0; s++)
    m = m * b + v;
  if (*s == '.')
    for (s++; (v = abtod_digit (*s, base)) >= 0; s++)
      {
        m = m * b + v;
        e--;
      }
  if (base == 10 && (*s == 'e' || *s == 'E'))
    {
      char const *t = s + 1;
      int x = 0;
      int minus = 0;
      if (*t == '+' || *t == '-')
        minus = *t++ == '-';
      if (abtod_digit (*t, 10) >= 0)
        {
          for (; (v = abtod_digit (*t, 10)) >= 0; t++)
            if (x < 100000)
              x = x * 10 + v;
          e += minus ? -x : x;
          s = t;
        }
    }
  *p = s;
  if (m == 0)
    return negative ? -0.0 : 0.0;
  n = e < 0 ? -e : e;
  for (f = b; n; n >>= 1, f = f * f)
    if (n & 1)
      power = power * f;
  m = e < 0 ? m / power : m * power;
  return negative ? -(double) m : (double) m;
}
