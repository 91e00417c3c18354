package stream

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader feeds the reader arbitrary streams: it never panics, never
// returns more than it was given room for, and accepts a stream only if it
// is one the Writer writes (checked by writing it again).
func FuzzReader(f *testing.F) {
	f.Add(encode(f, FlagRunning, payload(2*MaxChunk+5, 7)))
	f.Add(encode(f, 0, []byte("a little migration stream")))
	f.Add(encode(f, 0, nil))
	f.Add(encode(f, 0, make([]byte, MaxChunk+1)))
	f.Add([]byte(Magic))
	f.Add([]byte("QEVM\x00\x00\x00\x03"))
	f.Fuzz(func(t *testing.T, b []byte) {
		sr, err := NewReader(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("header error %v does not wrap ErrFormat", err)
			}
			return
		}
		h := sr.Header()
		if len(h.Definition) == 0 || len(h.Definition) > MaxDefinition {
			t.Fatalf("definition of %d bytes accepted", len(h.Definition))
		}
		data, err := io.ReadAll(sr)
		if err != nil {
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("error %v does not wrap ErrFormat", err)
			}
			return
		}
		if int64(len(data)) != sr.Payload() || sr.Consumed() != int64(len(b)) {
			t.Fatalf("accepted: %d bytes of payload (Payload %d), %d of %d bytes consumed", len(data), sr.Payload(), sr.Consumed(), len(b))
		}
		// An accepted stream decodes to what, written again, reads the same.
		var again bytes.Buffer
		w, err := NewWriter(&again, h)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		_, data2, err := decode(&again)
		if err != nil || !bytes.Equal(data, data2) {
			t.Fatalf("written again: %v", err)
		}
	})
}
