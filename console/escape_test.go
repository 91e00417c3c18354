package console

import (
	"strings"
	"testing"
)

// runEscaper feeds chunks through an escaper and returns what reached the
// guest and the events, as a trace: data, "<help>" and "<detach>" in order.
// Nothing is processed after a detach.
func runEscaper(esc, detach int, chunks ...string) string {
	e := newEscaper(esc, detach)
	var trace strings.Builder
	for _, c := range chunks {
		in := []byte(c)
		for len(in) > 0 {
			var out []byte
			var ev event
			out, ev, in = e.feed(nil, in)
			trace.Write(out)
			switch ev {
			case evHelp:
				trace.WriteString("<help>")
			case evDetach:
				trace.WriteString("<detach>")
				return trace.String()
			}
		}
	}
	return trace.String()
}

func TestEscaper(t *testing.T) {
	tests := []struct {
		name   string
		esc    int
		detach int
		chunks []string
		want   string
	}{
		{"plain data", '~', 0x1d, []string{"ls -l\r"}, "ls -l\r"},
		{"tilde at the very start detaches", '~', 0x1d, []string{"~."}, "<detach>"},
		{"tilde not after a newline is data", '~', 0x1d, []string{"cd ~.\r"}, "cd ~.\r"},
		{"tilde mid-line, then dot", '~', 0x1d, []string{"a~", "."}, "a~."},
		{"tilde tilde sends one tilde", '~', 0x1d, []string{"\r~~/x"}, "\r~/x"},
		{"tilde tilde then dot is data", '~', 0x1d, []string{"~~."}, "~."},
		{"after CR", '~', 0x1d, []string{"ls\r~."}, "ls\r<detach>"},
		{"after LF", '~', 0x1d, []string{"ls\n~."}, "ls\n<detach>"},
		{"split across reads", '~', 0x1d, []string{"echo\r", "~", "."}, "echo\r<detach>"},
		{"split after the newline", '~', 0x1d, []string{"echo\r~", ".rest"}, "echo\r<detach>"},
		{"help", '~', 0x1d, []string{"\r~?x"}, "\r<help>x"},
		{"help then detach", '~', 0x1d, []string{"~?", "~."}, "<help><detach>"},
		{"help, then text is not at a line start", '~', 0x1d, []string{"~?a~."}, "<help>a~."},
		{"tilde and another character pass both", '~', 0x1d, []string{"\r~x"}, "\r~x"},
		{"tilde and newline pass both; line start again", '~', 0x1d, []string{"~\r~."}, "~\r<detach>"},
		{"after an unknown escape, not at a line start", '~', 0x1d, []string{"~a~."}, "~a~."},
		{"input after detach is dropped", '~', 0x1d, []string{"~.more"}, "<detach>"},
		{"a cursor report after a newline keeps the line start", '~', 0x1d, []string{"\r\x1b[24;14R~."}, "\r\x1b[24;14R<detach>"},
		{"a cursor report split across reads", '~', 0x1d, []string{"\r\x1b[2", "4;14R", "~."}, "\r\x1b[24;14R<detach>"},
		{"a cursor report mid-line is not a line start", '~', 0x1d, []string{"ab\x1b[24;14R~."}, "ab\x1b[24;14R~."},
		{"an arrow key keeps the line start", '~', 0x1d, []string{"\x1b[A~."}, "\x1b[A<detach>"},
		{"a two-byte escape sequence", '~', 0x1d, []string{"\r\x1bO~."}, "\r\x1bO<detach>"},
		{"detach key anywhere", '~', 0x1d, []string{"abc\x1ddef"}, "abc<detach>"},
		{"detach key split", '~', 0x1d, []string{"abc", "\x1d"}, "abc<detach>"},
		{"detach key off", '~', NoKey, []string{"a\x1db"}, "a\x1db"},
		{"escape off", NoKey, 0x1d, []string{"~.\r~."}, "~.\r~."},
		{"both off", NoKey, NoKey, []string{"~.\x1d"}, "~.\x1d"},
		{"other escape character", '%', 0x1d, []string{"~.\r%."}, "~.\r<detach>"},
		{"other escape doubled", '%', 0x1d, []string{"%%", "%."}, "%%."},
		{"control escape", 0x01, NoKey, []string{"x\r\x01."}, "x\r<detach>"},
		{"large chunk without escapes", '~', 0x1d, []string{strings.Repeat("x", 10000)}, strings.Repeat("x", 10000)},
		{"large chunk ending in newline, escape next", '~', 0x1d, []string{strings.Repeat("x", 100) + "\r", "~."}, strings.Repeat("x", 100) + "\r<detach>"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := runEscaper(tt.esc, tt.detach, tt.chunks...)
			if got != tt.want {
				t.Errorf("chunks %q: got %q, want %q", tt.chunks, got, tt.want)
			}
		})
	}
}

// TestEscaperBytewise checks that feeding one byte at a time gives the same
// result as one chunk: the state carries across reads.
func TestEscaperBytewise(t *testing.T) {
	for _, in := range []string{"ls\r~~x\r~?y\r~.z", "a~b\n~c~.\r\r~.", "~~~.\r~%\x1d"} {
		whole := runEscaper('~', 0x1d, in)
		var chunks []string
		for _, c := range in {
			chunks = append(chunks, string(c))
		}
		if got := runEscaper('~', 0x1d, chunks...); got != whole {
			t.Errorf("%q byte by byte: got %q, want %q", in, got, whole)
		}
	}
}

func TestParseKey(t *testing.T) {
	tests := []struct {
		in   string
		want int
		err  bool
	}{
		{"~", '~', false},
		{"%", '%', false},
		{"^]", 0x1d, false},
		{"^a", 0x01, false},
		{"^A", 0x01, false},
		{"^?", 0x7f, false},
		{"none", NoKey, false},
		{"", 0, true},
		{"ab", 0, true},
		{"^1", 0, true},
		{"^@", 0, true},
		{"é", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseKey(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseKey(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err == nil {
			if back, _ := ParseKey(KeyName(got)); back != got {
				t.Errorf("ParseKey(KeyName(%d)) = %d", got, back)
			}
		}
	}
}

func TestEscapeHelp(t *testing.T) {
	h := escapeHelp('~', 0x1d)
	for _, want := range []string{"~.  detach", "~~  send ~", "~?  this list", "^]   detach (anywhere)"} {
		if !strings.Contains(h, want) {
			t.Errorf("escape help %q lacks %q", h, want)
		}
	}
	if strings.Contains(strings.ReplaceAll(h, "\r\n", ""), "\n") {
		t.Errorf("escape help %q has a bare LF (the terminal is raw)", h)
	}
}

func TestDetachHint(t *testing.T) {
	tests := []struct {
		esc, detach int
		want        string
	}{
		{'~', 0x1d, "Type ~. (after a newline) or ^] to detach, ~? for help."},
		{'~', NoKey, "Type ~. (after a newline) to detach."},
		{NoKey, 0x1d, "Type ^] to detach."},
		{NoKey, NoKey, "No escape or detach key: end this vmtui (kill it) to detach."},
	}
	for _, tt := range tests {
		if got := detachHint(tt.esc, tt.detach); got != tt.want {
			t.Errorf("detachHint(%d, %d) = %q, want %q", tt.esc, tt.detach, got, tt.want)
		}
	}
}
