package cli

import (
	"context"
	"fmt"
	"os"

	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/imageformat"
	"github.com/vmtui/vmtui/internal/units"
)

func createCommand() *command {
	return &command{
		name:     "create",
		synopsis: "[-c] [-b base | -i input] [-f qcow2|raw|qcow] [-s size] disk",
		about:    "Create a disk image: empty, an overlay on a base image, or imported from another image.",
		run:      runCreate,
	}
}

const createHelp = `
As vmctl create: the new image must not exist yet. Its format is the one
-f names, else the one a "qcow2:", "raw:" or "qcow:" prefix of the name
gives, else the extension's (.qcow2 is qcow2; .raw and .img are raw; .qcow
is qcow, the original format, version 1), else qcow2.
With -b the size is the base image's (a different -s is an error), and the
base's name is stored relative to the new image's directory. With -i the
size is the input's; a larger -s grows the imported image.
`

func runCreate(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("create")
	base := fs.String("b", "", "make a qcow2 (or qcow) overlay on the image `base`, which unallocated clusters read from")
	input := fs.String("i", "", "import the image `input` (qcow2, raw or qcow; a backing chain is flattened)")
	sizeArg := fs.String("s", "", "the virtual `size`, e.g. 10G; needed unless -b or -i gives it")
	formatArg := fs.String("f", "", "the image `format`: qcow2, raw or qcow")
	compress := fs.Bool("c", false, "compress the imported data (with -i; zlib)")
	passFile := passphraseFlag(fs)
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
	format, path, err := imageformat.ForNewImage(pos[0], *formatArg)
	if err != nil {
		return err
	}
	var size int64
	if *sizeArg != "" {
		if size, err = units.ParseSize(*sizeArg); err != nil {
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
	case *compress && format == disk.FormatRaw:
		return fmt.Errorf("create: -c needs the qcow2 or qcow format, not %s", format)
	case *base != "" && format == disk.FormatRaw:
		return fmt.Errorf("base images require qcow2 disk format")
	case *input != "":
		pass, err := readPassphrase(*passFile)
		if err != nil {
			return fmt.Errorf("create: %w", err)
		}
		if err := e.importImage(ctx, *input, path, format, size, *compress, pass); err != nil {
			return err
		}
	case size == 0 && *base == "":
		return &usageError{msg: fmt.Sprintf("could not create %s: missing size argument", path)}
	default:
		opts := disk.CreateOptions{Format: format, Size: size}
		if *base != "" {
			cwd, err := os.Getwd()
			if err != nil {
				return err
			}
			opts.BackingFile = disk.BackingName(cwd, path, *base)
		}
		if err := disk.Create(path, opts); err != nil {
			return e.explainInUse(err, false)
		}
	}
	// vmctl reports success on standard error, as a diagnostic.
	fmt.Fprintf(e.stderr, "%s: %s imagefile created\n", progName, format)
	return nil
}

// importImage converts the image at input into a new image at path, grown
// to size when that is larger than the input.
func (e *env) importImage(ctx context.Context, input, path string, format disk.Format, size int64, compress bool, pass []byte) error {
	if size != 0 {
		info, err := disk.Info(ctx, input, disk.InfoOptions{})
		if err != nil {
			return e.explainInUse(err, false)
		}
		if size < info.VirtualSize {
			return fmt.Errorf("create: size %s (%d bytes) cannot be smaller than input disk size %s (%d bytes)",
				units.FormatSize(size), size, units.FormatSize(info.VirtualSize), info.VirtualSize)
		}
		if size == info.VirtualSize {
			size = 0
		}
	}
	if err := disk.Convert(ctx, input, path, disk.ConvertOptions{Format: format, Compress: compress, Passphrase: pass}); err != nil {
		return e.explainInUse(err, false)
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
