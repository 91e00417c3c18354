// Package seriallog reads and trims a VM's serial log, the file QEMU
// writes everything the guest prints to (its serial chardev's logfile=):
// capping it before a start, showing its tail, following it, and making its
// text safe to replay on a terminal. Package vm caps the log and shows
// QEMU's last words from it; package console replays and follows it. It
// imports nothing of vmtui's but the leaf atomicfile, with which it rewrites
// a capped log.
package seriallog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/vmtui/vmtui/internal/atomicfile"
)

// DefaultCap is the size above which Cap trims a serial log.
const DefaultCap = 1 << 20

// tailChunk bounds how much of a log Tail reads from its end.
const tailChunk = 256 << 10

// Cap keeps the serial log at path under limit bytes: when it is larger,
// it is cut from the front, keeping the last half of limit (from a line
// start), after a line that says how much was dropped. A missing log is not
// an error. Call it only while QEMU does not write the log: the vm package
// calls it before each start.
func Cap(path string, limit int64) error {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("cap serial log: %w", err)
	}
	if fi.Size() <= limit {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("cap serial log: %w", err)
	}
	defer f.Close()
	keep := limit / 2
	off := fi.Size() - keep
	buf := make([]byte, keep)
	if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
		return fmt.Errorf("cap serial log %q: %w", path, err)
	}
	// Start at a line if one starts in the first quarter of what is kept.
	if i := bytes.IndexByte(buf, '\n'); i >= 0 && int64(i) < keep/4 {
		buf, off = buf[i+1:], off+int64(i)+1
	}
	tmp, err := atomicfile.Create(path, fi.Mode().Perm())
	if err != nil {
		return fmt.Errorf("cap serial log: %w", err)
	}
	fmt.Fprintf(tmp, "[vmtui: %d bytes of older serial output dropped]\r\n", off)
	_, err = tmp.Write(buf)
	if err == nil {
		err = tmp.CommitReplace()
	}
	if err != nil {
		tmp.Abort()
	} else {
		err = tmp.Close()
	}
	if err != nil {
		return fmt.Errorf("cap serial log %q: %w", path, err)
	}
	return nil
}

// Tail returns the last n lines of the log at path, as the guest wrote
// them (CR LF line ends, escape sequences included), reading at most the
// last 256 KiB. A missing log has no lines.
func Tail(path string, n int) ([]byte, error) {
	b, _, err := TailOffset(path, n)
	return b, err
}

// TailOffset is Tail that also returns the size of the log when it was
// read: the offset to Follow it from.
func TailOffset(path string, n int) ([]byte, int64, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read serial log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("read serial log: %w", err)
	}
	size := fi.Size()
	off := max(0, size-tailChunk)
	buf := make([]byte, size-off)
	m, err := f.ReadAt(buf, off)
	if err != nil && err != io.EOF {
		return nil, 0, fmt.Errorf("read serial log %q: %w", path, err)
	}
	buf = buf[:m]
	return lastLines(buf, n), off + int64(m), nil
}

// lastLines returns the last n lines of b; an unfinished last line (a
// prompt) counts as one.
func lastLines(b []byte, n int) []byte {
	if n <= 0 {
		return nil
	}
	end := len(b)
	if end > 0 && b[end-1] == '\n' {
		end--
	}
	for i := end - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}

// ansiSeq matches the terminal control sequences a guest prints: CSI and
// OSC sequences and two-character escapes.
var ansiSeq = regexp.MustCompile(`\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)?|[@-Z\\-_])`)

// TailText returns the last n lines of the log at path as plain text, for
// display in the TUI: escape sequences, CRs and other control characters
// removed, tabs kept.
func TailText(path string, n int) ([]string, error) {
	b, err := Tail(path, n)
	if err != nil || len(b) == 0 {
		return nil, err
	}
	b = ansiSeq.ReplaceAll(b, nil)
	b = bytes.TrimSuffix(b, []byte("\n"))
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		lines[i] = strings.Map(func(r rune) rune {
			if r < 0x20 && r != '\t' || r == 0x7f {
				return -1
			}
			return r
		}, l)
	}
	return lines, nil
}

// terminalQuery matches the sequences by which a guest asks the terminal
// something (cursor position, status, device attributes). Replayed from the
// log they would make the user's terminal answer into the guest's input.
var terminalQuery = regexp.MustCompile(`\x1b\[[0-9;>=?]*[nc]`)

// StripQueries removes from b the terminal queries a guest printed.
func StripQueries(b []byte) []byte { return terminalQuery.ReplaceAll(b, nil) }

// Replayable prepares log text for the user's terminal: no queries, and
// every LF preceded by a CR (the terminal is in raw mode).
func Replayable(b []byte) []byte {
	b = StripQueries(b)
	var out []byte
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// followInterval is how often Watch checks the log for new output.
const followInterval = 50 * time.Millisecond

// follow copies what is appended to the log at path from offset off to w
// until ctx ends. A log that shrank (capped before a new start) is read
// again from its start; a log that does not exist yet is waited for.
func Follow(ctx context.Context, path string, off int64, w io.Writer) error {
	buf := make([]byte, 64<<10)
	var f *os.File
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	t := time.NewTicker(followInterval)
	defer t.Stop()
	for {
		fi, err := os.Stat(path)
		switch {
		case err == nil:
			if f != nil {
				if cur, err := f.Stat(); err != nil || !os.SameFile(cur, fi) {
					f.Close() // replaced by Cap
					f, off = nil, 0
				}
			}
			if f == nil {
				if f, err = os.Open(path); err != nil {
					return fmt.Errorf("follow serial log: %w", err)
				}
			}
			if fi.Size() < off {
				off = 0
			}
			for {
				n, err := f.ReadAt(buf, off)
				if n > 0 {
					off += int64(n)
					if _, werr := w.Write(buf[:n]); werr != nil {
						return werr
					}
				}
				if err != nil || n < len(buf) {
					break
				}
			}
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("follow serial log: %w", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
