package main

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"vmtui/disk"
)

var createCommand = &command{
	name:     "create",
	synopsis: "[-c] [-b base | -i input] [-f qcow2|raw] [-s size] disk",
	about:    "Create a disk image: empty, an overlay on a base image, or imported from another image.",
	run:      runCreate,
}

const createHelp = `
As vmctl create: the new image must not exist yet. Its format is the one
-f names, else the one a "qcow2:" or "raw:" prefix of the name gives, else
the extension's (.qcow2 is qcow2; .raw and .img are raw), else qcow2.
With -b the size is the base image's (a different -s is an error), and the
base's name is stored relative to the new image's directory. With -i the
size is the input's; a larger -s grows the imported image.
`

func runCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("create")
	base := fs.String("b", "", "make a qcow2 overlay on the image `base`, which unallocated clusters read from")
	input := fs.String("i", "", "import the image `input` (qcow2 or raw; a backing chain is flattened)")
	sizeArg := fs.String("s", "", "the virtual `size`, e.g. 10G; needed unless -b or -i gives it")
	formatArg := fs.String("f", "", "the image `format`: qcow2 or raw")
	compress := fs.Bool("c", false, "compress the imported data (with -i; zlib)")
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return e.help(fs, createHelp)
	}
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{}
	}
	format, path, err := diskFormat(pos[0], *formatArg)
	if err != nil {
		return err
	}
	var size int64
	if *sizeArg != "" {
		if size, err = disk.ParseSize(*sizeArg); err != nil {
			return fmt.Errorf("create: %w", err)
		}
		if size == 0 {
			return fmt.Errorf("could not create %s: disk size must be more than 0 bytes", path)
		}
	}
	switch {
	case *base != "" && *input != "":
		return fmt.Errorf("conflicting -b and -i arguments")
	case *compress && *input == "":
		return fmt.Errorf("create: -c compresses an imported image: use it with -i")
	case *compress && format != disk.FormatQcow2:
		return fmt.Errorf("create: -c needs the qcow2 format, not %s", format)
	case *base != "" && format != disk.FormatQcow2:
		return fmt.Errorf("base images require qcow2 disk format")
	case *input != "":
		if err := importImage(ctx, *input, path, format, size, *compress); err != nil {
			return err
		}
	case size == 0 && *base == "":
		return &usageError{msg: fmt.Sprintf("could not create %s: missing size argument", path)}
	default:
		opts := disk.CreateOptions{Format: format, Size: size}
		if *base != "" {
			opts.BackingFile = backingName(path, *base)
		}
		if err := disk.Create(path, opts); err != nil {
			return explainInUse(err, false)
		}
	}
	// vmctl reports success on standard error, as a diagnostic.
	fmt.Fprintf(e.err, "%s: %s imagefile created\n", progName, format)
	return nil
}

// importImage converts the image at input into a new image at path, grown
// to size when that is larger than the input.
func importImage(ctx context.Context, input, path string, format disk.Format, size int64, compress bool) error {
	if size != 0 {
		info, err := disk.Info(ctx, input, disk.InfoOptions{})
		if err != nil {
			return explainInUse(err, false)
		}
		if size < info.VirtualSize {
			return fmt.Errorf("create: size %s (%d bytes) cannot be smaller than input disk size %s (%d bytes)",
				disk.FormatSize(size), size, disk.FormatSize(info.VirtualSize), info.VirtualSize)
		}
		if size == info.VirtualSize {
			size = 0
		}
	}
	if err := disk.Convert(ctx, input, path, disk.ConvertOptions{Format: format, Compress: compress}); err != nil {
		return explainInUse(err, false)
	}
	if size != 0 {
		// The image is complete at its input's size; growing it is one
		// more step, and the image stays usable if that step fails.
		if err := disk.Resize(ctx, path, size); err != nil {
			return err
		}
	}
	return nil
}

// diskFormat returns the format of the image a command creates and its
// path. The format is the one flag names, else the one a "qcow2:" or "raw:"
// prefix of name gives (the prefix is removed, as vmctl does), else the
// name's extension's (.qcow2; .raw or .img), else qcow2.
func diskFormat(name, flag string) (disk.Format, string, error) {
	path := name
	var prefixed disk.Format
	for _, f := range []disk.Format{disk.FormatQcow2, disk.FormatRaw} {
		if p, ok := strings.CutPrefix(name, string(f)+":"); ok && p != "" {
			prefixed, path = f, p
		}
	}
	if flag != "" {
		f, err := parseFormat(flag)
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
		return disk.FormatRaw, path, nil
	}
	return disk.FormatQcow2, path, nil
}

// parseFormat maps a format name given on the command line to a format.
func parseFormat(s string) (disk.Format, error) {
	switch f := disk.Format(strings.ToLower(s)); f {
	case disk.FormatQcow2, disk.FormatRaw:
		return f, nil
	}
	return "", fmt.Errorf("unknown image format %q (want qcow2 or raw)", s)
}

// backingName is the name to store in a new overlay at path for the base
// image the user named: a relative name is taken, as the user means it,
// relative to the current directory, and stored relative to the overlay's
// directory, which is how qcow2 readers (vmtui, QEMU, vmd) resolve it.
func backingName(path, base string) string {
	if filepath.IsAbs(base) {
		return base
	}
	absBase, err1 := filepath.Abs(base)
	absDir, err2 := filepath.Abs(filepath.Dir(path))
	if err1 != nil || err2 != nil {
		return base
	}
	rel, err := filepath.Rel(absDir, absBase)
	if err != nil {
		return absBase
	}
	return rel
}
