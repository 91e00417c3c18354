package ui

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/vmtui/vmtui/config"
)

// The new VM form: every field checked as it is typed, with the config
// package's own rules, then the whole definition with config.VM.ValidateNew.

// Fields of the new VM form.
const (
	vmName = iota
	vmMemory
	vmMaxMemory
	vmCPUs
	vmDisks
	vmISO
	vmKernel
	vmInitrd
	vmAppend
	vmNetwork
	vmPorts
)

// vmForm is the new VM form.
type vmForm struct {
	*form
	cwd string
}

func newVMForm(cwd string) *vmForm {
	f := &vmForm{cwd: cwd}
	pathCheck := func(string) error { return nil }
	f.form = &form{
		title: "New VM",
		fields: []field{
			newField("name", "demo", "letters, digits, - _ . (as vmctl)", func(v string) error {
				if v == "" {
					return errors.New("a name is needed")
				}
				return config.ValidName(v)
			}),
			newField("memory", "512M", "empty for 512M; K, M, G suffixes, a whole number of MiB", func(v string) error {
				if v == "" {
					return nil
				}
				_, err := config.ParseMemory(v)
				return err
			}),
			newField("max mem", "2G", "empty for none; what vmtui set -m can grow memory to while it runs", func(v string) error {
				if v == "" {
					return nil
				}
				_, err := config.ParseMemory(v)
				return err
			}),
			newField("vcpus", "1", fmt.Sprintf("1 to %d", config.MaxCPUs), func(v string) error {
				if v == "" {
					return nil
				}
				n, err := strconv.Atoi(v)
				if err != nil || n < 1 || n > config.MaxCPUs {
					return fmt.Errorf("%q is not a number of vcpus from 1 to %d", v, config.MaxCPUs)
				}
				return nil
			}),
			newField("disks", "disk.qcow2, data.raw", fmt.Sprintf("comma-separated images, at most %d (press d to make one)", config.MaxDisks), func(v string) error {
				if n := len(splitList(v)); n > config.MaxDisks {
					return fmt.Errorf("%d disks, at most %d", n, config.MaxDisks)
				}
				return nil
			}),
			newField("iso", "install.iso", "a CD-ROM image", pathCheck),
			newField("kernel", "/path/to/vmlinuz", "boot a kernel directly", pathCheck),
			newField("initrd", "/path/to/initrd.img", "needs a kernel", pathCheck),
			newField("append", "console=ttyS0", "the kernel's command line", nil),
			newField("network", "user", "empty for user (NAT), none, or bridge,br=NAME", func(v string) error {
				if v == "" || v == "none" {
					return nil
				}
				_, err := config.ParseNetwork(v)
				return err
			}),
			newField("ports", "tcp::2222-:22", "port forwards of the user network, comma-separated", func(v string) error {
				for _, p := range splitList(v) {
					if _, err := config.ParseHostFwd(p); err != nil {
						return err
					}
				}
				return nil
			}),
		},
	}
	f.form.whole = func() error {
		_, err := f.definition()
		return err
	}
	f.focusOn(0)
	f.validate()
	return f
}

// definition builds the definition the form describes and validates it.
func (f *vmForm) definition() (*config.VM, error) {
	def := &config.VM{Name: f.value(vmName)}
	if v := f.value(vmMemory); v != "" {
		mem, err := config.ParseMemory(v)
		if err != nil {
			return nil, err
		}
		def.Memory = mem
	}
	if v := f.value(vmMaxMemory); v != "" {
		max, err := config.ParseMemory(v)
		if err != nil {
			return nil, err
		}
		def.MaxMemory = max
	}
	if v := f.value(vmCPUs); v != "" {
		def.CPUs, _ = strconv.Atoi(v)
	}
	for _, p := range splitList(f.value(vmDisks)) {
		def.Disks = append(def.Disks, config.Disk{Path: absPath(f.cwd, p)})
	}
	def.CDROM = absPath(f.cwd, f.value(vmISO))
	def.Kernel = absPath(f.cwd, f.value(vmKernel))
	def.Initrd = absPath(f.cwd, f.value(vmInitrd))
	def.Append = f.value(vmAppend)
	if def.Initrd != "" && def.Kernel == "" {
		return nil, errors.New("initrd: needs a kernel")
	}
	if def.Append != "" && def.Kernel == "" {
		return nil, errors.New("append: needs a kernel")
	}
	ports := splitList(f.value(vmPorts))
	if v := f.value(vmNetwork); v != "none" {
		n, err := config.ParseNetwork(v)
		if err != nil {
			return nil, err
		}
		if len(ports) > 0 && n.Type != config.NetUser {
			return nil, errors.New("ports: port forwards need a user network")
		}
		n.HostFwd = append(n.HostFwd, ports...)
		def.Networks = append(def.Networks, n)
	} else if len(ports) > 0 {
		return nil, errors.New("ports: port forwards need a user network")
	}
	if def.Kernel == "" && def.CDROM == "" && len(def.Disks) == 0 {
		return nil, errors.New("nothing to boot: give a disk, an iso or a kernel")
	}
	def.SetDefaults()
	// The ID is Store.Create's to assign.
	if err := def.ValidateNew(); err != nil {
		return nil, errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	return def, nil
}

// newVMModel is the new VM screen.
type newVMModel struct {
	common
	*vmForm
	width, height int
	help          help.Model
}

func newNewVM(c common) *newVMModel {
	return &newVMModel{common: c, vmForm: newVMForm(c.cwd), help: help.New(), width: defaultWidth, height: defaultHeight}
}

// SetSize sets the size of the screen.
func (n *newVMModel) SetSize(width, height int) {
	n.width, n.height = width, height
	n.help.Width = width
}

// ShortHelp is the form's keys.
func (n *newVMModel) ShortHelp() []key.Binding { return n.keys.Form.ShortHelp() }

// FullHelp is the form's keys.
func (n *newVMModel) FullHelp() [][]key.Binding { return n.keys.Form.FullHelp() }

// Update types in the form, and submits it (createCmd) or cancels it
// (closeMsg).
func (n *newVMModel) Update(msg tea.Msg) tea.Cmd {
	if n.busy {
		return nil
	}
	res, cmd := n.update(n.keys.Form, msg)
	switch res {
	case formCancel:
		return closeScreen
	case formSubmit:
		def, err := n.definition()
		if err != nil {
			n.err = err
			return nil
		}
		n.busy = true
		return createCmd(n.b, def)
	}
	return cmd
}

// created takes the result of the submission; it reports whether the
// screen is done.
func (n *newVMModel) created(msg createdMsg) bool {
	n.busy = false
	if msg.err != nil {
		n.err = fmt.Errorf("define %s: %w", msg.def.Name, msg.err)
		return false
	}
	return true
}

// View draws the form and its keys.
func (n *newVMModel) View() string {
	return clip(n.view(n.styles, n.width, n.vms.spin.View())+n.help.ShortHelpView(n.ShortHelp()), n.width, n.height)
}
