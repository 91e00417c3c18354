package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/disk/qcow2"
	"github.com/vmtui/vmtui/internal/imageformat"
	"github.com/vmtui/vmtui/internal/units"
)

func diskInfoCommand() *command {
	return &command{
		name:     "info",
		synopsis: "[-U] [--json] disk",
		about:    "Describe a disk image and its backing chain.",
		run:      runDiskInfo,
	}
}

func runDiskInfo(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("disk info")
	asJSON := fs.Bool("json", false, "print JSON with the keys of qemu-img info --output=json")
	share := forceShareFlag(fs)
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return e.help(fs, `
The format is detected by content. Sizes are printed as qemu-img info prints
them; --json gives them in bytes. An image that a running VM writes is
refused, as qemu-img refuses it, unless -U.`)
	}
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{}
	}
	info, err := disk.Info(ctx, pos[0], disk.InfoOptions{ForceShare: *share})
	if err != nil {
		return e.explainInUse(err, true)
	}
	if *asJSON {
		b, err := json.MarshalIndent(info, "", "    ")
		if err != nil {
			return fmt.Errorf("info %q: %w", pos[0], err)
		}
		fmt.Fprintf(e.stdout, "%s\n", b)
		return nil
	}
	fmt.Fprint(e.stdout, info.String())
	return nil
}

func diskCheckCommand() *command {
	return &command{
		name:     "check",
		synopsis: "[-U | -r leaks|all] disk",
		about:    "Check a qcow2 image for leaked clusters and corruptions, as qemu-img check does.",
		run:      runDiskCheck,
	}
}

// The exit statuses of disk check, those of qemu-img check.
const (
	checkClean        = 0
	checkFailed       = 1
	checkCorrupt      = 2
	checkLeaks        = 3
	checkNotSupported = 63
)

func runDiskCheck(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("disk check")
	repair := fs.String("r", "", "repair `what`: leaks (lower refcounts that are too high) or all (also corruptions)")
	share := forceShareFlag(fs)
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return e.help(fs, `
Detail lines go to standard error, the summary to standard output. The exit
status is 0 for a clean image, 2 when it has corruptions, 3 when it has only
leaked clusters, 63 for a raw image (nothing to check) and 1 when the check
itself failed. After a repair, the status describes the repaired image.
An image that a running VM uses is refused a repair, and a check too when
the VM writes it, unless -U: a check of an image that changes meanwhile
may report errors that are none.`)
	}
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{}
	}
	mode := qcow2.RepairNone
	switch *repair {
	case "":
	case "leaks":
		mode = qcow2.RepairLeaks
	case "all":
		mode = qcow2.RepairAll
	default:
		return &usageError{msg: fmt.Sprintf("disk check: -r %q: want leaks or all", *repair)}
	}
	if *share && mode != qcow2.RepairNone {
		return &usageError{msg: "disk check: -U cannot be used with -r: a repair needs the image to itself"}
	}
	res, err := disk.Check(ctx, pos[0], mode, disk.CheckOptions{ForceShare: *share})
	err = e.explainInUse(err, true)
	if res != nil {
		for _, m := range res.Messages {
			fmt.Fprintln(e.stderr, m)
		}
	}
	switch {
	case errors.Is(err, disk.ErrCheckNotSupported):
		return &exitError{code: checkNotSupported, err: err}
	case err != nil:
		return &exitError{code: checkFailed, err: err}
	}
	printCheckSummary(e.stdout, res)
	switch {
	case res.CheckErrors > 0:
		return &exitError{code: checkFailed}
	case res.Corruptions > 0:
		return &exitError{code: checkCorrupt}
	case res.Leaks > 0:
		return &exitError{code: checkLeaks}
	}
	return nil
}

// printCheckSummary prints the summary of a check as qemu-img check does.
func printCheckSummary(w io.Writer, r *qcow2.CheckResult) {
	if r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0 {
		fmt.Fprintln(w, "No errors were found on the image.")
	}
	if r.Corruptions > 0 {
		fmt.Fprintf(w, "\n%d errors were found on the image.\n"+
			"Data may be corrupted, or further writes to the image may corrupt it.\n", r.Corruptions)
	}
	if r.Leaks > 0 {
		fmt.Fprintf(w, "\n%d leaked clusters were found on the image.\n"+
			"This means waste of disk space, but no harm to data.\n", r.Leaks)
	}
	if r.CheckErrors > 0 {
		fmt.Fprintf(w, "\n%d internal errors have occurred during the check.\n", r.CheckErrors)
	}
	if r.TotalClusters != 0 && r.AllocatedClusters != 0 {
		fmt.Fprintf(w, "%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
			r.AllocatedClusters, r.TotalClusters,
			float64(r.AllocatedClusters)*100/float64(r.TotalClusters),
			float64(r.FragmentedClusters)*100/float64(r.AllocatedClusters),
			float64(r.CompressedClusters)*100/float64(r.AllocatedClusters))
	}
	if r.ImageEndOffset > 0 {
		fmt.Fprintf(w, "Image end offset: %d\n", r.ImageEndOffset)
	}
}

func diskConvertCommand() *command {
	return &command{
		name:     "convert",
		synopsis: "[-cpU] [-O qcow2|raw|qcow] [-t writeback|unsafe] [--compression-type zlib|zstd] input output",
		about:    "Copy an image, its backing chain flattened, into a new image of any format.",
		run:      runDiskConvert,
	}
}

func runDiskConvert(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("disk convert")
	formatArg := fs.String("O", "", "the output `format`: qcow2, raw or qcow")
	compress := fs.Bool("c", false, "compress the output's clusters (qcow2 or qcow)")
	ctype := fs.String("compression-type", "", "the compression `type` of a qcow2 output: zlib (the default) or zstd")
	progress := fs.Bool("p", false, "show the progress on standard error")
	cache := fs.String("t", "writeback", "the output's cache `mode`: writeback (sync the output before it is renamed into place) or unsafe (never sync, as qemu-img's default)")
	share := forceShareFlag(fs)
	passFile := passphraseFlag(fs)
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return e.help(fs, `
The input's format is detected by content. The output must not exist; its
format is the one -O names, else the output name's extension's (.qcow2 is
qcow2; .raw and .img are raw; .qcow is qcow), else qcow2. Zeros are never written: the
output is sparse. An interrupted conversion leaves no output behind. By
default the output is on disk when convert returns; -t unsafe skips that
sync, as qemu-img does by default, and a power cut soon after may then lose
the output's data. An input that a running VM writes is refused unless -U,
which copies it as it is, however inconsistent.`)
	}
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return &usageError{}
	}
	format, out, err := imageformat.ForNewImage(pos[1], *formatArg)
	if err != nil {
		return err
	}
	opts := disk.ConvertOptions{Format: format, Compress: *compress, ForceShare: *share}
	if opts.Passphrase, err = readPassphrase(*passFile); err != nil {
		return fmt.Errorf("disk convert: %w", err)
	}
	switch *cache {
	case "writeback":
	case "unsafe":
		opts.NoSync = true
	default:
		return fmt.Errorf("disk convert: -t: unknown cache mode %q (want writeback or unsafe)", *cache)
	}
	if *ctype != "" {
		if format != disk.FormatQcow2 {
			return fmt.Errorf("disk convert: --compression-type needs qcow2 output, not %s", format)
		}
		if opts.CompressionType, err = qcow2.ParseCompressionType(*ctype); err != nil {
			return fmt.Errorf("disk convert: --compression-type: %w", err)
		}
	}
	if *compress && format == disk.FormatRaw {
		return fmt.Errorf("disk convert: -c needs qcow2 or qcow output, not %s", format)
	}
	var bar *progressLine
	if *progress {
		bar = &progressLine{w: e.stderr}
		opts.Progress = bar.update
	}
	err = disk.Convert(ctx, pos[0], out, opts)
	if bar != nil {
		bar.end()
	}
	return e.explainInUse(err, true)
}

// forceShareFlag defines -U and --force-share, as qemu-img has them.
func forceShareFlag(fs *flag.FlagSet) *bool {
	share := fs.Bool("U", false, "read an image even when a running VM writes it (what is read may be inconsistent)")
	fs.BoolVar(share, "force-share", false, "the same as -U")
	return share
}

// explainInUse completes an error about an image in use: it names the VM
// that uses the image when one does and, for a command with -U (canForce),
// says how to read it anyway when vmtui only wanted to read it.
func (e *env) explainInUse(err error, canForce bool) error {
	var iu *disk.InUseError
	if !errors.As(err, &iu) {
		return err
	}
	err = disk.NameHolder(err, e.vmDisks)
	if iu.ReadOnly && canForce {
		err = &hintError{err: err, hint: "-U reads it anyway, as it is at this moment"}
	}
	return err
}

// vmDisks returns the disks of each defined VM, by name.
func (e *env) vmDisks() (map[string][]string, error) {
	m, err := e.manager()
	if err != nil {
		return nil, err
	}
	defs, err := m.Store().List()
	if err != nil {
		return nil, err
	}
	disks := make(map[string][]string, len(defs))
	for _, def := range defs {
		for _, d := range def.Disks {
			disks[def.Name] = append(disks[def.Name], d.Path)
		}
	}
	return disks, nil
}

// savedDisks returns the disks of each VM that has a saved state, by name
// (disk.RefuseSaved). Without a state root, or without a saved state in
// it, there are none, and the store is not opened.
func (e *env) savedDisks() (map[string][]string, error) {
	paths, err := e.paths()
	if err != nil {
		return nil, nil
	}
	ents, err := os.ReadDir(filepath.Dir(paths.SavedStateFile("x")))
	if errors.Is(err, fs.ErrNotExist) || err == nil && len(ents) == 0 {
		return nil, nil
	}
	m, err := e.manager()
	if err != nil {
		return nil, err
	}
	return m.SavedDisks()
}

// hintError is an error followed by what the user can do about it.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() + "; " + e.hint }
func (e *hintError) Unwrap() error { return e.err }

// progressLine draws "    (45.12/100%)" on one line, as qemu-img -p does,
// redrawing only when the hundredths change.
type progressLine struct {
	w     io.Writer
	last  int64 // hundredths of a percent last drawn, +1 (0: none yet)
	drawn bool
}

func (p *progressLine) update(done, total int64) {
	h := int64(10000)
	if total > 0 {
		h = int64(float64(done) / float64(total) * 10000)
	}
	h = min(max(h, 0), 10000)
	if p.drawn && h+1 == p.last {
		return
	}
	p.last, p.drawn = h+1, true
	fmt.Fprintf(p.w, "\r    (%d.%02d/100%%)", h/100, h%100)
}

// end finishes the line, so that what follows starts on a line of its own.
func (p *progressLine) end() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

func diskCommitCommand() *command {
	return &command{
		name:     "commit",
		synopsis: "[-p] overlay",
		about:    "Write what a qcow2 overlay holds into its backing file.",
		run:      runDiskCommit,
	}
}

func runDiskCommit(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("disk commit")
	progress := fs.Bool("p", false, "show the progress on standard error")
	passFile := passphraseFlag(fs)
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return e.help(fs, `
As qemu-img commit -d: the backing file (qcow2 or raw) receives the
overlay's data and zeroed clusters and is grown to the overlay's size if it
is smaller; the overlay itself is left as it is.`)
	}
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{}
	}
	var opts disk.CommitOptions
	if opts.Passphrase, err = readPassphrase(*passFile); err != nil {
		return fmt.Errorf("disk commit: %w", err)
	}
	// What commit writes is the overlay's backing file.
	if info, err := disk.Info(ctx, pos[0], disk.InfoOptions{ForceShare: true}); err == nil && info.FullBackingFilename != "" {
		if err := disk.RefuseSaved(info.FullBackingFilename, e.savedDisks); err != nil {
			return fmt.Errorf("commit %q: %w", pos[0], err)
		}
	}
	var bar *progressLine
	if *progress {
		bar = &progressLine{w: e.stderr}
		opts.Progress = bar.update
	}
	err = disk.Commit(ctx, pos[0], opts)
	if bar != nil {
		bar.end()
	}
	if err != nil {
		return e.explainInUse(err, false)
	}
	fmt.Fprintln(e.stdout, "Image committed.")
	return nil
}

func diskResizeCommand() *command {
	return &command{
		name:     "resize",
		synopsis: "disk [+]size",
		about:    "Grow a disk image to a size, or by an amount with a leading +.",
		run:      runDiskResize,
	}
}

func runDiskResize(ctx context.Context, e *env, args []string) error {
	// No flags: a size such as -1G must reach the check below, not the
	// flag parser, so only a lone -h or --help asks for help.
	var pos []string
	for i, a := range args {
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			return e.help(newFlagSet("disk resize"), `
The size is in the syntax of create -s (10G, 1.5G, 512M, bytes without a
unit); +size grows the image by that much. Images only grow: shrinking
could lose data. A qcow2 image's size is rounded up to 512 bytes.`)
		}
		pos = append(pos, a)
	}
	if len(pos) != 2 {
		return &usageError{}
	}
	path, arg := pos[0], pos[1]
	if strings.HasPrefix(arg, "-") {
		return fmt.Errorf("resize %q to %s: %w", path, arg, disk.ErrShrink)
	}
	grow, ok := strings.CutPrefix(arg, "+")
	size, err := units.ParseSize(grow)
	if err == nil && ok && strings.HasPrefix(grow, "+") {
		err = fmt.Errorf("%w %q: more than one sign", units.ErrSize, arg)
	}
	if err != nil {
		return fmt.Errorf("resize %q: %w", path, err)
	}
	if ok {
		// The size only: Resize takes the lock that matters.
		info, err := disk.Info(ctx, path, disk.InfoOptions{ForceShare: true})
		if err != nil {
			return err
		}
		if size > math.MaxInt64-info.VirtualSize {
			return fmt.Errorf("resize %q: %s (%d bytes) plus %s is too large", path,
				units.FormatSize(info.VirtualSize), info.VirtualSize, arg)
		}
		size += info.VirtualSize
	}
	if err := disk.RefuseSaved(path, e.savedDisks); err != nil {
		return fmt.Errorf("resize %q: %w", path, err)
	}
	if err := disk.Resize(ctx, path, size); err != nil {
		return e.explainInUse(err, false)
	}
	fmt.Fprintln(e.stdout, "Image resized.")
	return nil
}

func diskSnapshotCommand() *command {
	return &command{
		name:     "snapshot",
		synopsis: "[-l [-U] | -c tag | -a tag | -d tag] disk",
		about:    "List, create, apply or delete the internal snapshots of a qcow2 image, as qemu-img snapshot does.",
		run:      runDiskSnapshot,
	}
}

func runDiskSnapshot(ctx context.Context, e *env, args []string) error {
	fs := newFlagSet("disk snapshot")
	list := fs.Bool("l", false, "list the snapshots (the default)")
	create := fs.String("c", "", "create a disk-only snapshot named `tag`")
	apply := fs.String("a", "", "revert the disk to the snapshot with ID or name `tag`")
	del := fs.String("d", "", "delete the snapshot with ID or name `tag`")
	share := forceShareFlag(fs)
	pos, err := parseFlags(fs, args)
	if err == errHelp {
		return e.help(fs, `
The list has qemu-img snapshot -l's columns: ID, TAG, VM SIZE (the RAM saved
with the snapshot by QEMU's savevm; 0 for a disk-only one), DATE (local
time), VM CLOCK and ICOUNT. -c refuses a tag that a snapshot has already as
its name or ID; -a and -d take a snapshot's ID or its name. Creating,
applying and deleting change only metadata, and are refused while a running
VM uses the image; -U lists the snapshots of an image a VM writes.`)
	}
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return &usageError{}
	}
	actions := 0
	for _, set := range []bool{*list, *create != "", *apply != "", *del != ""} {
		if set {
			actions++
		}
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range []string{"c", "a", "d"} {
		if set[name] && fs.Lookup(name).Value.String() == "" {
			return &usageError{msg: fmt.Sprintf("disk snapshot: -%s needs a tag", name)}
		}
	}
	if actions > 1 {
		return &usageError{msg: "disk snapshot: use one of -l, -c, -a and -d"}
	}
	if *share && actions == 1 && !*list {
		return &usageError{msg: "disk snapshot: -U lists only: a change needs the image to itself"}
	}
	path := pos[0]
	switch {
	case *create != "":
		_, err = disk.CreateSnapshot(ctx, path, *create)
	case *apply != "":
		if err := disk.RefuseSaved(path, e.savedDisks); err != nil {
			return fmt.Errorf("apply snapshot %q of %q: %w", *apply, path, err)
		}
		err = disk.ApplySnapshot(ctx, path, *apply)
	case *del != "":
		err = disk.DeleteSnapshot(ctx, path, *del)
	default:
		var sns []disk.Snapshot
		sns, err = disk.Snapshots(ctx, path, disk.OpenOptions{ForceShare: *share})
		if err == nil && len(sns) > 0 {
			err = disk.WriteSnapshotList(e.stdout, sns, time.Local)
		}
		return e.explainInUse(err, true)
	}
	return e.explainInUse(err, false)
}
