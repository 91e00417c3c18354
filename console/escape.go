package console

import (
	"fmt"
	"strings"
)

// DefaultEscape is the escape character recognised after a newline, as in
// cu(1) and ssh(1).
const DefaultEscape = '~'

// DefaultDetachKey is the key that detaches anywhere in a line: Ctrl-], as
// in telnet(1) and virsh console.
const DefaultDetachKey = 0x1d

// NoKey, as Options.Escape or Options.DetachKey, turns the escape character
// or the detach key off.
const NoKey = -1

// event is what the escape state machine asks the relay to do besides
// passing data on.
type event int

const (
	evNone   event = iota
	evDetach       // ~. or the detach key
	evHelp         // ~?: list the escapes
)

// escaper is the state machine of cu(1)'s escapes, applied to what the user
// types. An escape character is special only at the start of a line (after
// CR or LF, or before anything was typed); the character after it says what
// to do: "." detaches, "?" lists the escapes, the escape character itself
// sends one, and anything else is sent along with the escape character, as
// cu does. The detach key detaches wherever it is typed. The state carries
// across reads, so an escape split between two reads works.
//
// Terminal reports are not typing: a guest that asks the terminal where its
// cursor is (busybox's shell does after every prompt) gets an answer such
// as ESC [ 24 ; 14 R in the input stream. Escape sequences pass through
// without changing whether a line has just started, so that ~. still works
// after such a prompt.
type escaper struct {
	esc       int // escape character, or NoKey
	detach    int // detach key, or NoKey
	lineStart bool
	pending   bool     // the escape character was typed at the start of a line
	seq       seqState // where in an escape sequence the input is
}

// seqState tracks an escape sequence (ESC, then a final byte, or ESC [
// parameters and a final byte) in the input.
type seqState int

const (
	seqNone seqState = iota
	seqESC           // after ESC
	seqCSI           // after ESC [, before the final byte
)

// step advances the sequence state past b and reports whether b belongs to
// an escape sequence.
func (s *seqState) step(b byte) bool {
	switch *s {
	case seqESC:
		if b == '[' {
			*s = seqCSI
		} else {
			*s = seqNone
		}
		return true
	case seqCSI:
		if b >= 0x40 && b <= 0x7e {
			*s = seqNone
		}
		return true
	}
	if b == 0x1b {
		*s = seqESC
		return true
	}
	return false
}

func newEscaper(esc, detach int) *escaper {
	return &escaper{esc: esc, detach: detach, lineStart: true}
}

// feed processes in, appending what to send to the guest to dst. It stops
// after the first event and returns the rest of in unprocessed; after
// evDetach the rest should be dropped.
func (e *escaper) feed(dst, in []byte) (out []byte, ev event, rest []byte) {
	// Fast path: in the middle of a line, with no newline, escape sequence
	// or detach key in this chunk, everything passes and nothing changes.
	if !e.pending && !e.lineStart && e.seq == seqNone && !hasAny(in, byte(e.detach), e.detach != NoKey) {
		return append(dst, in...), evNone, nil
	}
	for i, b := range in {
		switch {
		case !e.pending && e.detach != NoKey && int(b) == e.detach:
			return dst, evDetach, in[i+1:]
		case !e.pending && e.seq.step(b):
			dst = append(dst, b) // a terminal report or a function key: lineStart stays
		case e.pending:
			e.pending = false
			switch {
			case b == '.':
				return dst, evDetach, in[i+1:]
			case b == '?':
				return dst, evHelp, in[i+1:]
			case int(b) == e.esc:
				dst = append(dst, b)
			default:
				dst = append(dst, byte(e.esc), b)
			}
			// An escape at the start of a line ends the line's start,
			// unless what followed it is a newline.
			e.lineStart = b == '\r' || b == '\n'
		case e.detach != NoKey && int(b) == e.detach:
			return dst, evDetach, in[i+1:]
		case e.lineStart && e.esc != NoKey && int(b) == e.esc:
			e.pending = true
		default:
			dst = append(dst, b)
			e.lineStart = b == '\r' || b == '\n'
		}
	}
	return dst, evNone, nil
}

// hasAny reports whether b holds a newline, an ESC, or (withKey) key.
func hasAny(b []byte, key byte, withKey bool) bool {
	for _, x := range b {
		if x == '\r' || x == '\n' || x == 0x1b || (withKey && x == key) {
			return true
		}
	}
	return false
}

// ParseKey parses an escape character or detach key as given on the
// command line: a single character ("~"), caret notation for a control
// character ("^]", "^A"), or "none" for no key. It returns NoKey for "none".
func ParseKey(s string) (int, error) {
	switch {
	case s == "none":
		return NoKey, nil
	case len(s) == 1 && s[0] < 0x80:
		return int(s[0]), nil
	case len(s) == 2 && s[0] == '^':
		c := s[1]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c == '?' {
			return 0x7f, nil
		}
		if c > '@' && c <= '_' { // not ^@: NUL cannot be typed reliably
			return int(c - '@'), nil
		}
	}
	return 0, fmt.Errorf("bad key %q: want one character, ^X for a control character, or none", s)
}

// KeyName is the way ParseKey spells a key: "~", "^]", or "none".
func KeyName(k int) string {
	switch {
	case k == NoKey:
		return "none"
	case k == 0x7f:
		return "^?"
	case k < 0x20:
		return "^" + string(rune(k+'@'))
	}
	return string(rune(k))
}

// detachHint says how to detach, for the line printed on attach.
func detachHint(esc, detach int) string {
	var ways []string
	if esc != NoKey {
		ways = append(ways, KeyName(esc)+". (after a newline)")
	}
	if detach != NoKey {
		ways = append(ways, KeyName(detach))
	}
	switch len(ways) {
	case 0:
		return "No escape or detach key: end this vmtui (kill it) to detach."
	case 1:
		return "Type " + ways[0] + " to detach."
	}
	return "Type " + ways[0] + " or " + ways[1] + " to detach" + ", " + KeyName(esc) + "? for help."
}

// escapeHelp is the list ~? prints, with CRLF line ends for a raw terminal.
func escapeHelp(esc, detach int) string {
	var b strings.Builder
	e := KeyName(esc)
	b.WriteString("\r\n[vmtui console escapes, after a newline]\r\n")
	fmt.Fprintf(&b, "  %s.  detach\r\n", e)
	fmt.Fprintf(&b, "  %s%s  send %s\r\n", e, e, e)
	fmt.Fprintf(&b, "  %s?  this list\r\n", e)
	if detach != NoKey {
		fmt.Fprintf(&b, "  %s   detach (anywhere)\r\n", KeyName(detach))
	}
	return b.String()
}
