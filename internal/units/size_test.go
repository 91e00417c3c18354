package units

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"
)

const (
	kib = int64(1) << 10
	mib = int64(1) << 20
	gib = int64(1) << 30
	tib = int64(1) << 40
	pib = int64(1) << 50
	eib = int64(1) << 60
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		// Plain bytes.
		{"0", 0},
		{"1", 1},
		{"512", 512},
		{"1048576", mib},
		{"000123", 123},
		{"9223372036854775807", math.MaxInt64},
		// Every unit, both cases.
		{"1B", 1},
		{"1b", 1},
		{"1K", kib},
		{"1k", kib},
		{"512M", 512 * mib},
		{"512m", 512 * mib},
		{"10G", 10 * gib},
		{"10g", 10 * gib},
		{"2T", 2 * tib},
		{"2t", 2 * tib},
		{"3P", 3 * pib},
		{"3p", 3 * pib},
		{"7E", 7 * eib},
		{"7e", 7 * eib},
		{"0G", 0},
		{"8191P", 8191 * pib},
		// Fractions, truncated toward zero as scan_scaled truncates.
		{"1.5G", gib + gib/2},
		{"1.5K", 1536},
		{"0.5M", mib / 2},
		{".5K", 512},
		{"0.1K", 102},    // 102.4
		{"1.999K", 2046}, // 2046.976
		{"2.25T", 2*tib + tib/4},
		{"1.0G", gib},
		{"1.", 1},
		{"10.G", 10 * gib},
		{"1.9B", 1},
		{"1.9", 1}, // no unit: the fraction is discarded
		{"7.5E", 7*eib + eib/2},
		// Exact where scan_scaled drops digits (it reads "1.9E" as 1E).
		{"1.9E", 2190550858753009254}, // floor(1.9 × 2^60)
		{"7.99999999999999999E", 9223372036854775796},
		{"7.99999999999999999999E", math.MaxInt64},                              // 2^63 − 0.0115
		{"0.0000000000000000008673617379884035472059622406959533691406250E", 1}, // 2^-60 E
		// Leading space and one '+', as scan_scaled allows.
		{" 1G", gib},
		{"\t64M", 64 * mib},
		{"+1G", gib},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if err != nil {
				t.Fatalf("ParseSize(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Errorf("ParseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseSizeErrors(t *testing.T) {
	tests := []struct {
		in   string
		want string // in the message, after the quoted input
	}{
		{"", "no number"},
		{"   ", "no number"},
		{".", "no number"},
		{"G", `no number before "G"`},
		{"-1", "negative"},
		{"-1G", "negative"},
		{" -5M", "negative"},
		{"+-1", "more than one sign"},
		{"++1", "more than one sign"},
		{"1.2.3", "more than one decimal point"},
		{"1.2.3G", "more than one decimal point"},
		{"10X", `unknown unit "X"`},
		{"10 G", `unknown unit " "`},
		{"1,5G", `unknown unit ","`},
		{"1e3", `unexpected "3" after the unit`}, // no scientific notation: e is exa
		{"1GB", `unexpected "B" after the unit`},
		{"1GiB", `unexpected "iB" after the unit`},
		{"1G ", `unexpected " " after the unit`},
		{"1G foo", `unexpected " foo" after the unit`},
		{"0x10", `unknown unit "x"`},
		{"ten", `no number before "ten"`},
		{"8E", "too large"},
		{"8192P", "too large"},
		{"9223372036854775808", "too large"},
		{"99999999999999999999999999", "too large"},
		{"8388608T", "too large"},
		{"8.0E", "too large"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			if err == nil {
				t.Fatalf("ParseSize(%q) = %d, want an error containing %q", tt.in, got, tt.want)
			}
			if !errors.Is(err, ErrSize) {
				t.Errorf("ParseSize(%q) error %v does not wrap ErrSize", tt.in, err)
			}
			msg := err.Error()
			prefix := "invalid size " + strconv.Quote(tt.in) + ": "
			if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tt.want) {
				t.Errorf("ParseSize(%q) error = %q, want %q followed by %q", tt.in, msg, prefix, tt.want)
			}
		})
	}
}

func TestFormatSize(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		// The examples vmctl's status table relies on.
		{gib, "1.0G"},
		{512 * mib, "512M"},
		{64 * mib, "64.0M"},
		{0, "0B"},
		{100, "100B"},
		// Bytes: no fraction, no rounding.
		{1, "1B"},
		{99, "99B"},
		{1023, "1023B"},
		{-1, "-1B"},
		{-1023, "-1023B"},
		// Unit boundaries.
		{1024, "1.0K"},
		{1025, "1.0K"},
		{mib, "1.0M"},
		{tib, "1.0T"},
		{pib, "1.0P"},
		{eib, "1.0E"},
		{mib - 1, "1024K"}, // 1023.999K: the tenth rounds up to 10, carried into the number
		{gib - 1, "1024M"},
		{1023 * kib, "1023K"},
		// The tenth rounds half up: (10 × remainder-in-the-smaller-unit + 512) / 1024.
		{1536, "1.5K"},
		{1075, "1.0K"}, // 51/1024 = 0.0498
		{1076, "1.1K"}, // 52/1024 = 0.0508
		{1024 + 972, "1.9K"},
		{1024 + 973, "2.0K"},
		{gib + gib/2, "1.5G"},
		{10*gib + 300*mib, "10.3G"},
		{99*mib + 973*kib, "100M"}, // 99.95M: the tenth carries the number to 100
		{99*mib + 972*kib, "99.9M"},
		// The remainder below the next smaller unit is dropped before rounding.
		{1024 + 51, "1.0K"},
		{mib + 51*kib + 1023, "1.0M"},
		{mib + 52*kib, "1.1M"},
		// From 100 of a unit up: no decimal; rounded to a whole unit from the
		// rounded tenth, so 100.45K (tenth 5) already rounds up.
		{100 * kib, "100K"},
		{100*kib + 460, "100K"},
		{100*kib + 461, "101K"},
		{150*mib + 460*kib, "150M"},
		{150*mib + 461*kib, "151M"},
		{1000 * gib, "1000G"},
		{8 * gib, "8.0G"},
		{4 * tib, "4.0T"},
		// Negative sizes mirror positive ones.
		{-1536, "-1.5K"},
		{-gib, "-1.0G"},
		{-512 * mib, "-512M"},
		{-(150*mib + 461*kib), "-151M"},
		{-(mib - 1), "-1024K"},
		// The extremes.
		{math.MaxInt64, "8.0E"},
		{-math.MaxInt64, "-8.0E"},
		{math.MinInt64, "-8.0E"},
	}
	for _, tt := range tests {
		if got := FormatSize(tt.in); got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestFormatParseRoundTrip checks that what FormatSize prints, ParseSize
// reads back to within the rounding FormatSize applied.
func TestFormatParseRoundTrip(t *testing.T) {
	for _, n := range []int64{0, 1, 1023, 1024, 1536, 100 * kib, 100*kib + 461, mib - 1, 64 * mib, 512 * mib, gib, 10*gib + 300*mib, 999970000000000, 3 * tib, eib, math.MaxInt64} {
		checkRoundTrip(t, n)
	}
}

func checkRoundTrip(t *testing.T, n int64) {
	t.Helper()
	s := FormatSize(n)
	back, err := ParseSize(s)
	if err != nil {
		if n > 7*eib+eib/2 && errors.Is(err, ErrSize) {
			return // "8.0E" is one past the largest int64
		}
		t.Fatalf("ParseSize(FormatSize(%d) = %q): %v", n, s, err)
	}
	// One decimal place is off by at most half a tenth, plus the
	// truncated remainder below the next smaller unit. Whole units are
	// rounded from the rounded tenth, so 100.45K (100K+461) prints as 101K:
	// off by up to 563/1024 of a unit.
	unit := int64(1)
	for unit <= n/1024 && unit < eib {
		unit <<= 10
	}
	tol := unit / 20
	if strings.IndexByte(s, '.') < 0 {
		tol = unit / 1024 * 563
	}
	tol += unit/1024 + 1
	if d := back - n; d > tol || d < -tol {
		t.Errorf("ParseSize(FormatSize(%d) = %q) = %d, off by %d, more than %d", n, s, back, d, tol)
	}
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1", "1.5G", "512M", "8E", "7.9e", "-1", " +2k", "1GB", ".", "1.2.3", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if !errors.Is(err, ErrSize) || !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("ParseSize(%q) error %q must wrap ErrSize and quote the input", s, err)
			}
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d, negative", s, n)
		}
		checkRoundTrip(t, n)
	})
}
