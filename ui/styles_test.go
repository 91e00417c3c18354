package ui

import (
	"strings"
	"testing"
	"time"

	"github.com/vmtui/vmtui/vm"
)

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

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"start web: ok":     "start web: ok",
		"remove \x1b[2Jx?":  `remove \x1b[2Jx?`,
		"a\nb\tc":           `a\nb\tc`,
		"vm é ünïcode":      "vm é ünïcode",
		"c1 \u009b control": `c1 \u009b control`,
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestHostileNameEscaped: the status line and the confirmation prompt show
// a name with control characters (a definition file named so) escaped.
func TestHostileNameEscaped(t *testing.T) {
	evil := "x\x1b[2J\x1b]0;pwned\a"
	f := newFake()
	m := New(Options{Backend: f})
	m = update(t, m, listMsg{list: []vm.Status{{ID: 9, Name: evil, VCPUs: 1, MaxMem: 1 << 20, State: vm.StateStopped}}, at: time.Now()})
	for _, k := range []string{"x", "D"} { // stop: not running (status line); remove: asks
		m = keys(t, m, k)
		if v := m.View(); strings.Contains(v, "\x1b[2J") || strings.Contains(v, "\x1b]0;") || !strings.Contains(v, `x\x1b[2J`) {
			t.Errorf("after %q the screen has the raw name or not the escaped one:\n%q", k, v)
		}
	}
}
