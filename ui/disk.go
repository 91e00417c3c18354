package ui

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/progress"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/disk"
	"github.com/vmtui/vmtui/internal/imageformat"
	"github.com/vmtui/vmtui/internal/units"
)

// The disk screen: a form that makes a new image (a size), an overlay on a
// base image, or an import (a conversion) of an existing image, with a
// progress bar fed by disk.Convert and cancelled with esc.

// Fields of the disk form.
const (
	diskPath = iota
	diskFormat
	diskSize
	diskBase
	diskImport
)

// diskForm is the disk screen.
type diskForm struct {
	*form
	cwd string
	bar progress.Model
	job *importJob
	// done and total are the import's progress.
	done, total int64
}

func newDiskForm(cwd string) *diskForm {
	f := &diskForm{cwd: cwd}
	f.bar = progress.New(progress.WithDefaultGradient(), progress.WithWidth(40))
	f.form = &form{
		title: "New disk image",
		fields: []field{
			newField("path", "disk.qcow2", "the new image; never overwritten", func(v string) error {
				if v == "" {
					return errors.New("a path is needed")
				}
				return nil
			}),
			newField("format", "qcow2", "qcow2, raw or qcow; empty: from the name (a prefix, .raw/.img, .qcow)", func(v string) error {
				if strings.TrimSpace(v) == "" {
					return nil
				}
				_, err := imageformat.Parse(v)
				return err
			}),
			newField("size", "1G", "for a new image: 512M, 20G, ...", func(v string) error {
				if v == "" {
					return nil
				}
				n, err := units.ParseSize(v)
				if err == nil && n <= 0 {
					err = fmt.Errorf("size %q: must be more than 0", v)
				}
				return err
			}),
			newField("base", "base.qcow2", "or: make a qcow2 overlay on this base image", nil),
			newField("import", "image.raw", "or: import (convert) this image", nil),
		},
	}
	f.form.whole = f.check
	f.focusOn(0)
	f.validate()
	return f
}

// target is the format the new image will have and the path to make it at,
// by the rule the command line follows (imageformat.ForNewImage).
func (f *diskForm) target() (disk.Format, string, error) {
	return imageformat.ForNewImage(f.value(diskPath), f.value(diskFormat))
}

// check says whether the fields make one kind of disk.
func (f *diskForm) check() error {
	size, base, imp := f.value(diskSize), f.value(diskBase), f.value(diskImport)
	switch {
	case base != "" && imp != "":
		return errors.New("give a base image or an image to import, not both")
	case imp != "" && size != "":
		return errors.New("an import takes the size of its image: leave size empty")
	}
	format, _, err := f.target()
	switch {
	case err != nil:
		return err
	case base != "" && format != disk.FormatQcow2:
		return errors.New("an overlay is a qcow2 image")
	case base == "" && imp == "" && size == "":
		return errors.New("give a size, a base image or an image to import")
	}
	return nil
}

// diskModel is the disk screen.
type diskModel struct {
	common
	*diskForm
	width, height int
	help          help.Model
}

func newDisk(c common) *diskModel {
	return &diskModel{common: c, diskForm: newDiskForm(c.cwd), help: help.New(), width: defaultWidth, height: defaultHeight}
}

// SetSize sets the size of the screen.
func (d *diskModel) SetSize(width, height int) {
	d.width, d.height = width, height
	d.help.Width = width
}

// ShortHelp is the form's keys, or the key that cancels an import.
func (d *diskModel) ShortHelp() []key.Binding {
	if d.job != nil {
		c := d.keys.Form.Cancel
		return []key.Binding{key.NewBinding(key.WithKeys(c.Keys()...), key.WithHelp(c.Help().Key, "cancel the import"))}
	}
	return d.keys.Form.ShortHelp()
}

// FullHelp is ShortHelp in one column.
func (d *diskModel) FullHelp() [][]key.Binding { return [][]key.Binding{d.ShortHelp()} }

// Update types in the form and submits it, and follows an import's
// progress.
func (d *diskModel) Update(msg tea.Msg) tea.Cmd {
	f := d.diskForm
	switch msg := msg.(type) {
	case progressMsg:
		if f.job == nil {
			return nil
		}
		f.done, f.total = msg.done, msg.total
		cmds := []tea.Cmd{waitProgress(f.job)}
		if msg.total > 0 {
			cmds = append(cmds, f.bar.SetPercent(float64(msg.done)/float64(msg.total)))
		}
		return tea.Batch(cmds...)
	}
	if f.job != nil {
		// An import runs: esc cancels it, nothing else is typed.
		if k, ok := msg.(tea.KeyMsg); ok && key.Matches(k, d.keys.Form.Cancel) {
			f.job.cancel()
			return nil
		}
		if fm, ok := msg.(progress.FrameMsg); ok {
			bar, cmd := f.bar.Update(fm)
			f.bar = bar.(progress.Model)
			return cmd
		}
		return nil
	}
	if f.busy {
		return nil
	}
	res, cmd := f.update(d.keys.Form, msg)
	switch res {
	case formCancel:
		return closeScreen
	case formSubmit:
		format, path, err := f.target()
		if err != nil { // the form checked it: not reached
			f.err = err
			return nil
		}
		path = absPath(f.cwd, path)
		if src := f.value(diskImport); src != "" {
			ctx, cancel := context.WithCancel(context.Background())
			f.job = &importJob{progress: make(chan progressMsg, 1), done: make(chan struct{}), cancel: cancel}
			f.done, f.total = 0, 0
			return tea.Batch(convertCmd(ctx, d.b, f.job, absPath(f.cwd, src), path, format), waitProgress(f.job))
		}
		opts := disk.CreateOptions{Format: format}
		if v := f.value(diskSize); v != "" {
			opts.Size, _ = units.ParseSize(v)
		}
		if base := f.value(diskBase); base != "" {
			opts.BackingFile = disk.BackingName(f.cwd, path, base)
		}
		f.busy = true
		return diskCreateCmd(d.b, path, opts)
	}
	return cmd
}

// finish takes the result of the disk's creation or import; it reports
// whether the screen is done.
func (d *diskModel) finish(msg diskDoneMsg) bool {
	f := d.diskForm
	f.busy = false
	if f.job != nil {
		f.job.cancel()
		f.job = nil
	}
	switch {
	case errors.Is(msg.err, context.Canceled):
		f.err = errors.New("import cancelled; nothing was left at " + msg.path)
		return false
	case msg.err != nil:
		f.err = msg.err
		return false
	}
	return true
}

// View draws the form, an import's progress, and the keys.
func (d *diskModel) View() string {
	f := d.diskForm
	out := f.view(d.styles, d.width, d.vms.spin.View())
	if f.job != nil {
		out += fmt.Sprintf("importing %s: %s / %s\n%s\n", f.value(diskImport),
			units.FormatSize(f.done), units.FormatSize(f.total), f.bar.View())
	}
	return clip(out+d.help.ShortHelpView(d.ShortHelp()), d.width, d.height)
}
