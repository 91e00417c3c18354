package ui

import "testing"

func TestDarkBackground(t *testing.T) {
	for _, tc := range []struct {
		colorFGBG string
		dark      bool
	}{
		{"", true},             // unknown: most terminals are dark
		{"15;0", true},         // white on black
		{"0;15", false},        // black on white
		{"0;7", false},         // light grey background
		{"7;8", true},          // dark grey background
		{"12;default;0", true}, // rxvt's three fields: the last is the background
		{"0;default;15", false},
		{"garbage", true},
		{"1;x", true},
	} {
		if got := darkBackground(tc.colorFGBG); got != tc.dark {
			t.Errorf("darkBackground(%q) = %v, want %v", tc.colorFGBG, got, tc.dark)
		}
	}
}
