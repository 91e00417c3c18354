// Package imageformat names the disk image formats vmtui knows, and holds
// the one rule that chooses the format of a new image from what the user
// wrote, for the command line and the TUI alike. It imports nothing of
// vmtui's: package config checks definitions with it without importing the
// image engine.
package imageformat

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Format is an image format, by its QEMU name.
type Format string

const (
	Qcow2 Format = "qcow2"
	Raw   Format = "raw"
	// Qcow is the original qcow format, version 1 (QEMU's block/qcow.c).
	Qcow Format = "qcow"
)

// Known are the formats vmtui reads and writes, in the order messages list
// them.
var Known = []Format{Qcow2, Raw, Qcow}

// IsKnown reports whether f is one of Known.
func (f Format) IsKnown() bool {
	for _, k := range Known {
		if f == k {
			return true
		}
	}
	return false
}

// names lists Known for messages: "qcow2, raw or qcow".
func names() string {
	s := make([]string, len(Known))
	for i, f := range Known {
		s[i] = string(f)
	}
	return strings.Join(s[:len(s)-1], ", ") + " or " + s[len(s)-1]
}

// Parse reads a format name a person wrote (a flag, a form field, a
// definition's format key): one of Known, in any case, around spaces.
func Parse(s string) (Format, error) {
	f := Format(strings.ToLower(strings.TrimSpace(s)))
	if f.IsKnown() {
		return f, nil
	}
	return "", fmt.Errorf("unknown image format %q (want %s)", s, names())
}

// ParseExact reads a format name written by a program (a qcow2 header's
// backing format): exactly one of Known, as QEMU requires; "" stays "",
// which means "detect it".
func ParseExact(s string) (Format, error) {
	if f := Format(s); f == "" || f.IsKnown() {
		return f, nil
	}
	return "", fmt.Errorf("unsupported image format %q (want %s)", s, names())
}

// ForNewImage returns the format of an image to be made at name and the
// path to make it at. The format is the one named by flag (a -f or -O, or
// a form's field; "" when not given), else the one a "qcow2:", "raw:" or
// "qcow:" prefix of name gives (the prefix is removed, as vmctl does), else
// the extension's (.qcow2 is qcow2; .raw and .img are raw; .qcow is qcow),
// else qcow2. A flag
// that contradicts the prefix is an error.
func ForNewImage(name, flag string) (Format, string, error) {
	path := name
	var prefixed Format
	for _, f := range Known {
		if p, ok := strings.CutPrefix(name, string(f)+":"); ok && p != "" {
			prefixed, path = f, p
		}
	}
	if strings.TrimSpace(flag) != "" {
		f, err := Parse(flag)
		if err != nil {
			return "", "", err
		}
		if prefixed != "" && prefixed != f {
			return "", "", fmt.Errorf("%s: the %s: prefix conflicts with the format %s", name, prefixed, f)
		}
		return f, path, nil
	}
	if prefixed != "" {
		return prefixed, path, nil
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".raw", ".img":
		return Raw, path, nil
	case ".qcow":
		return Qcow, path, nil
	}
	return Qcow2, path, nil
}
