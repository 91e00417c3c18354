package seriallog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeLog(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func numbered(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		fmt.Fprintf(&b, "line %d\r\n", i)
	}
	return b.String()
}

func TestCap(t *testing.T) {
	t.Run("under the cap is untouched", func(t *testing.T) {
		content := numbered(1, 10)
		path := writeLog(t, content)
		if err := Cap(path, 1000); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(path); string(got) != content {
			t.Errorf("got %q, want %q", got, content)
		}
	})
	t.Run("missing log", func(t *testing.T) {
		if err := Cap(filepath.Join(t.TempDir(), "none.log"), 1000); err != nil {
			t.Errorf("got %v, want nil", err)
		}
	})
	t.Run("over the cap keeps the last half from a line start", func(t *testing.T) {
		content := numbered(1, 5000) + "vmtui-guest# " // ~55 KB, an unfinished last line
		path := writeLog(t, content)
		if err := os.Chmod(path, 0o640); err != nil {
			t.Fatal(err)
		}
		const limit = 10000
		if err := Cap(path, limit); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > limit {
			t.Errorf("capped log is %d bytes, over the cap %d", len(got), limit)
		}
		header, rest, _ := strings.Cut(string(got), "\r\n")
		dropped := len(content) - len(rest)
		if want := fmt.Sprintf("[vmtui: %d bytes of older serial output dropped]", dropped); header != want {
			t.Errorf("first line %q, want %q", header, want)
		}
		if !strings.HasSuffix(content, rest) {
			t.Errorf("kept part is not the end of the log: %q...", rest[:min(len(rest), 40)])
		}
		if !strings.HasPrefix(rest, "line ") || len(rest) < limit/2-len("line 5000\r\n") {
			t.Errorf("kept %d bytes starting %q; want about %d from a line start", len(rest), rest[:min(len(rest), 20)], limit/2)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o640 {
			t.Errorf("mode %v, want 0640 kept", fi.Mode().Perm())
		}
		if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
			t.Errorf("directory holds %d files, want only the log (no temporary left)", len(ents))
		}
		// Capping again changes nothing.
		if err := Cap(path, limit); err != nil {
			t.Fatal(err)
		}
		if again, _ := os.ReadFile(path); !bytes.Equal(again, got) {
			t.Errorf("a second CapLog changed the log")
		}
	})
	t.Run("one long line is cut anywhere", func(t *testing.T) {
		path := writeLog(t, strings.Repeat("x", 50000))
		if err := Cap(path, 1000); err != nil {
			t.Fatal(err)
		}
		got, _ := os.ReadFile(path)
		_, rest, _ := strings.Cut(string(got), "\r\n")
		if rest != strings.Repeat("x", 500) {
			t.Errorf("kept %d bytes, want 500", len(rest))
		}
	})
}

func TestTail(t *testing.T) {
	tests := []struct {
		name, content string
		n             int
		want          string
	}{
		{"last lines", numbered(1, 100), 3, numbered(98, 100)},
		{"more than there are", numbered(1, 2), 10, numbered(1, 2)},
		{"unfinished last line counts", numbered(1, 5) + "vmtui-guest# ", 2, numbered(5, 5) + "vmtui-guest# "},
		{"zero", numbered(1, 5), 0, ""},
		{"empty", "", 5, ""},
		{"bare LF", "a\nb\nc\n", 2, "b\nc\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Tail(writeLog(t, tt.content), tt.n)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("missing log", func(t *testing.T) {
		got, err := Tail(filepath.Join(t.TempDir(), "none"), 5)
		if err != nil || len(got) != 0 {
			t.Errorf("got %q, %v; want nothing, nil", got, err)
		}
	})
	t.Run("large log reads only the end", func(t *testing.T) {
		got, err := Tail(writeLog(t, strings.Repeat("y", 1<<20)+numbered(1, 3)), 2)
		if err != nil || string(got) != numbered(2, 3) {
			t.Errorf("got %q, %v; want %q", got, err, numbered(2, 3))
		}
	})
}

func TestTailText(t *testing.T) {
	path := writeLog(t, "\x1b[1mbold\x1b[0m\r\n\x1b]0;title\x07tab\there\r\nvmtui-guest# \x1b[6n")
	got, err := TailText(path, 10)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"bold", "tab\there", "vmtui-guest# "}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestReplayable(t *testing.T) {
	got := string(Replayable([]byte("a\nb\r\nvmtui-guest# \x1b[6n\x1b[c\x1b[1mx")))
	want := "a\r\nb\r\nvmtui-guest# \x1b[1mx"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
