package ui

import (
	"context"
	"errors"
	"fmt"
	"strings"

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
			newField("format", "qcow2", "qcow2 or raw; empty: from the name (a raw: prefix, .raw/.img)", func(v string) error {
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

func (m Model) updateDiskForm(msg tea.Msg) (tea.Model, tea.Cmd) {
	f := m.diskForm
	if f.job != nil {
		// An import runs: esc cancels it, nothing else is typed.
		if k, ok := msg.(tea.KeyMsg); ok && k.String() == "esc" {
			f.job.cancel()
			return m, nil
		}
		if fm, ok := msg.(progress.FrameMsg); ok {
			var cmd tea.Cmd
			bar, cmd := f.bar.Update(fm)
			f.bar = bar.(progress.Model)
			return m, cmd
		}
		return m, nil
	}
	if f.busy {
		return m, nil
	}
	res, cmd := f.update(msg)
	switch res {
	case formCancel:
		m.diskForm, m.screen = nil, screenTable
		return m, nil
	case formSubmit:
		format, path, err := f.target()
		if err != nil { // the form checked it: not reached
			m.setStatus(true, "new disk: %v", err)
			return m, nil
		}
		path = absPath(f.cwd, path)
		if src := f.value(diskImport); src != "" {
			ctx, cancel := context.WithCancel(context.Background())
			f.job = &importJob{progress: make(chan progressMsg, 1), done: make(chan struct{}), cancel: cancel}
			f.done, f.total = 0, 0
			return m, tea.Batch(convertCmd(ctx, m.b, f.job, absPath(f.cwd, src), path, format), waitProgress(f.job))
		}
		opts := disk.CreateOptions{Format: format}
		if v := f.value(diskSize); v != "" {
			opts.Size, _ = units.ParseSize(v)
		}
		if base := f.value(diskBase); base != "" {
			opts.BackingFile = disk.BackingName(f.cwd, path, base)
		}
		f.busy = true
		return m, diskCreateCmd(m.b, path, opts)
	}
	return m, cmd
}

// updateDiskResult takes the progress and the result of a disk job.
func (m Model) updateDiskResult(msg tea.Msg) (tea.Model, tea.Cmd) {
	f := m.diskForm
	if f == nil {
		return m, nil
	}
	switch msg := msg.(type) {
	case progressMsg:
		if f.job == nil {
			return m, nil
		}
		f.done, f.total = msg.done, msg.total
		cmds := []tea.Cmd{waitProgress(f.job)}
		if msg.total > 0 {
			cmds = append(cmds, f.bar.SetPercent(float64(msg.done)/float64(msg.total)))
		}
		return m, tea.Batch(cmds...)
	case diskDoneMsg:
		f.busy = false
		if f.job != nil {
			f.job.cancel()
			f.job = nil
		}
		switch {
		case errors.Is(msg.err, context.Canceled):
			f.err = errors.New("import cancelled; nothing was left at " + msg.path)
			return m, nil
		case msg.err != nil:
			f.err = msg.err
			return m, nil
		}
		m.diskForm, m.screen = nil, screenTable
		m.setStatus(false, "%s %s", msg.verb, msg.path)
	}
	return m, nil
}

func (m Model) viewDisk() string {
	f := m.diskForm
	out := m.viewForm(f.form)
	if f.job != nil {
		out += fmt.Sprintf("importing %s: %s / %s\n%s\n", f.value(diskImport),
			units.FormatSize(f.done), units.FormatSize(f.total), f.bar.View())
		out += m.styles.Faint.Render("esc: cancel the import")
	} else {
		out += m.styles.Faint.Render("tab/↑↓ move  enter next/submit  ctrl+s submit  esc cancel")
	}
	return m.clip(out)
}
