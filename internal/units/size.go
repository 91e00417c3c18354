// Package units reads and writes sizes as OpenBSD's scan_scaled(3) and
// fmt_scaled(3) do, so that sizes are written as vmctl(8) users know them:
// "512M", "10G", "1.5G". It imports nothing of vmtui's.
package units

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"
)

// ErrSize is wrapped by every error ParseSize returns.
var ErrSize = errors.New("invalid size")

// sizeUnits are the unit letters of scan_scaled(3) and fmt_scaled(3), in
// order: each is 1024 times the one before it.
const sizeUnits = "BKMGTPE"

// ParseSize parses a size the way OpenBSD's scan_scaled(3) does, so that
// sizes are written as vmctl(8) users know them: a decimal number of bytes
// with an optional unit letter B, K, M, G, T, P or E (case-insensitive,
// powers of 1024), and an optional fraction before the unit ("1.5G" is
// 1610612736). Leading spaces and one leading '+' are accepted, as
// scan_scaled accepts them.
//
// ParseSize differs from scan_scaled only where scan_scaled is lax or lossy:
// it refuses an empty number ("", ".", "G"), a negative size, and anything
// after the unit letter ("1G foo", "1GB"); and it computes a fraction exactly
// (floor((whole + fraction) × unit)) where scan_scaled drops fraction digits
// that would overflow its accumulator (scan_scaled reads "1.9E" as 1E).
// Without a unit, as in scan_scaled, a fraction of a byte is discarded.
//
// Errors wrap ErrSize and quote the input.
func ParseSize(s string) (int64, error) {
	fail := func(why string) (int64, error) {
		return 0, fmt.Errorf("%w %q: %s", ErrSize, s, why)
	}
	p := strings.TrimLeft(s, " \t\n\v\f\r")
	if strings.HasPrefix(p, "-") {
		return fail("negative")
	}
	p = strings.TrimPrefix(p, "+")
	if strings.HasPrefix(p, "+") || strings.HasPrefix(p, "-") {
		return fail("more than one sign")
	}

	// Digits, with at most one decimal point.
	i := 0
	for i < len(p) && (isDigit(p[i]) || p[i] == '.') {
		i++
	}
	number, rest := p[:i], p[i:]
	whole, frac, _ := strings.Cut(number, ".") // "10." is 10, ".5K" is 512
	switch {
	case strings.Contains(frac, "."):
		return fail("more than one decimal point")
	case whole == "" && frac == "":
		if rest == "" {
			return fail("no number")
		}
		return fail("no number before " + strconv.Quote(rest))
	}
	tooLarge := fmt.Sprintf("too large (the largest size is %d bytes, just under 8E)", int64(math.MaxInt64))
	// Bound the arithmetic below: more than 19 significant digits cannot
	// fit an int64, and fraction digits past the 60th cannot change the
	// result, whose unit is at most 2^60.
	if whole = strings.TrimLeft(whole, "0"); len(whole) > 19 {
		return fail(tooLarge)
	}
	if len(frac) > 60 {
		frac = frac[:60]
	}

	scale := int64(1)
	if rest != "" {
		u := strings.IndexByte(sizeUnits, upper(rest[0]))
		if u < 0 {
			return fail(fmt.Sprintf("unknown unit %q (want one of B, K, M, G, T, P, E)", rest[:1]))
		}
		if len(rest) > 1 {
			return fail(fmt.Sprintf("unexpected %q after the unit", rest[1:]))
		}
		scale = int64(1) << (10 * u)
	}

	// value = floor((whole + frac/10^len(frac)) * scale), exactly.
	v := new(big.Int)
	if whole != "" {
		v.SetString(whole, 10) // digits only: cannot fail
	}
	v.Mul(v, big.NewInt(scale))
	if frac != "" {
		f, _ := new(big.Int).SetString(frac, 10)
		f.Mul(f, big.NewInt(scale))
		f.Quo(f, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(len(frac))), nil))
		v.Add(v, f)
	}
	if !v.IsInt64() {
		return fail(tooLarge)
	}
	return v.Int64(), nil
}

// FormatSize formats n as OpenBSD's fmt_scaled(3) does, the way vmctl(8)
// prints sizes: at most four digits and a unit letter, with one decimal
// place below 100 of a unit ("1.0G", "64.0M", "512M", "1.5K"), plain bytes
// below 1 KiB ("100B"), and "0B" for zero. The fraction is rounded to the
// nearest tenth, and a number of 100 or more is rounded to the nearest
// whole unit, exactly as fmt_scaled rounds.
//
// fmt_scaled refuses math.MinInt64, which has no positive counterpart;
// FormatSize formats it as "-8.0E".
func FormatSize(n int64) string {
	if n == math.MinInt64 {
		return "-8.0E"
	}
	abs := n
	if abs < 0 {
		abs = -abs
	}
	// The unit is the first whose factor exceeds abs/1024: the number
	// before the point is then below 1024 (before rounding).
	u := 0
	for u < len(sizeUnits)-1 && abs/1024 >= int64(1)<<(10*u) {
		u++
	}
	if u == 0 {
		if n == 0 {
			return "0B"
		}
		return strconv.FormatInt(n, 10) + "B"
	}
	factor := int64(1) << (10 * u)
	number := n / factor // truncated toward zero, as C does
	// The remainder in units of the next smaller unit, then in tenths.
	fract := (abs % factor) / (factor >> 10)
	fract = (10*fract + 512) / 1024
	if fract >= 10 {
		number = awayFromZero(number)
		fract = 0
	}
	unit := string(sizeUnits[u])
	if number >= 100 || number <= -100 {
		if fract >= 5 {
			number = awayFromZero(number)
		}
		return strconv.FormatInt(number, 10) + unit
	}
	return strconv.FormatInt(number, 10) + "." + strconv.FormatInt(fract, 10) + unit
}

func awayFromZero(n int64) int64 {
	if n >= 0 {
		return n + 1
	}
	return n - 1
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func upper(c byte) byte {
	if 'a' <= c && c <= 'z' {
		return c - 'a' + 'A'
	}
	return c
}
