package config

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/pelletier/go-toml/v2"

	"github.com/vmtui/vmtui/internal/imageformat"
	"github.com/vmtui/vmtui/internal/units"
)

// fileVM is a definition as it is written in its TOML file. It is kept apart
// from VM so that the file can hold what VM does not (memory as a scaled
// string, the absence of cpus) and VM what the file does not (File, Err).
type fileVM struct {
	ID        int64         `toml:"id" comment:"Assigned by vmtui when it created the VM; unique among the definitions."`
	Name      string        `toml:"name" comment:"The same as the file's name."`
	Template  string        `toml:"template,omitempty" comment:"The VM this one is an instance of; its disks are overlays on the template's."`
	Memory    any           `toml:"memory,omitempty" comment:"Memory, a whole number of megabytes: 512M, 2G, 1536M."`
	CPUs      *int64        `toml:"cpus,omitempty"`
	Sockets   *int64        `toml:"sockets,omitempty" comment:"CPU topology: sockets x cores x threads = cpus; one left out counts as 1."`
	Cores     *int64        `toml:"cores,omitempty"`
	Threads   *int64        `toml:"threads,omitempty"`
	MaxMemory any           `toml:"max_memory,omitempty" comment:"What vmtui set -m can grow memory to while the guest runs."`
	HugePages bool          `toml:"hugepages,omitempty"`
	MLock     bool          `toml:"mlock,omitempty"`
	Prealloc  bool          `toml:"prealloc,omitempty"`
	Vsock     bool          `toml:"vsock,omitempty" comment:"A vsock device, with a CID unique on the host unless cid fixes one."`
	CID       *int64        `toml:"cid,omitempty"`
	Kernel    string        `toml:"kernel,omitempty"`
	Initrd    string        `toml:"initrd,omitempty"`
	Append    string        `toml:"append,omitempty" comment:"The kernel's command line."`
	CDROM     string        `toml:"cdrom,omitempty"`
	Boot      string        `toml:"boot,omitempty" comment:"disk, cdrom or net."`
	Accel     string        `toml:"accel,omitempty"`
	Machine   string        `toml:"machine,omitempty"`
	ExtraArgs []string      `toml:"extra_args,omitempty" comment:"Appended to QEMU's command line as they are."`
	Disks     []fileDisk    `toml:"disks,omitempty" comment:"Format is qcow2 or raw; without one, vmtui detects it."`
	Networks  []fileNetwork `toml:"networks,omitempty" comment:"Type user (port forwards in hostfwd) or bridge (a host bridge)."`
	Shares    []fileShare   `toml:"shares,omitempty" comment:"Host directories the guest mounts with mount -t virtiofs TAG DIR."`
	HostDevs  []fileHostDev `toml:"hostdevs,omitempty" comment:"Host PCI devices passed through with VFIO, bound to vfio-pci."`
}

type fileDisk struct {
	Path     string `toml:"path"`
	Format   string `toml:"format,omitempty"`
	Bus      string `toml:"bus,omitempty"`
	IOThread bool   `toml:"iothread,omitempty"`
	Discard  bool   `toml:"discard,omitempty"`
	ReadOnly bool   `toml:"readonly,omitempty"`
	Cache    string `toml:"cache,omitempty"`
}

type fileNetwork struct {
	Type    string   `toml:"type,omitempty"`
	Bridge  string   `toml:"bridge,omitempty"`
	HostFwd []string `toml:"hostfwd,omitempty"`
	MAC     string   `toml:"mac,omitempty"`
}

// fileHeader starts every definition file vmtui writes.
const fileHeader = "# vmtui VM definition. Edit it freely: vmtui checks it each time it reads it.\n\n"

// Decode fills vm from the TOML in data (a definition file's content) and
// validates it. vm.Name and
// vm.File must be set (from the file's name); the name in the file must
// match.
func Decode(vm *VM, data []byte) error {
	var fv fileVM
	var errs []error
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(&fv); err != nil {
		var strict *toml.StrictMissingError
		var de *toml.DecodeError
		switch {
		case errors.As(err, &strict):
			// The decoder filled in everything else: go on and
			// report the unknown keys with the other problems.
			for _, e := range strict.Errors {
				line, _ := e.Position()
				errs = append(errs, &FieldError{File: vm.File, Line: line, Field: strings.Join(e.Key(), "."), Msg: "unknown key"})
			}
		case errors.As(err, &de):
			line, _ := de.Position()
			key := strings.Join(de.Key(), ".")
			return &FieldError{File: vm.File, Line: line, Field: key, Msg: decodeMessage(key, de)}
		default:
			return &FieldError{File: vm.File, Msg: err.Error()}
		}
	}
	c := &checker{file: vm.File}
	fillVM(vm, &fv, c)
	errs = append(errs, c.errs...)
	// Validate the rest, leaving out the fields fillVM already found
	// wrong, whose values in vm are placeholders.
	reported := map[string]bool{}
	for _, err := range c.errs {
		reported[err.(*FieldError).Field] = true
	}
	if err := vm.Validate(); err != nil {
		for _, err := range err.(interface{ Unwrap() []error }).Unwrap() {
			if !reported[err.(*FieldError).Field] {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// decodeMessage rewords the decoder's error, which speaks of Go types when a
// value has the wrong TOML type.
func decodeMessage(key string, de *toml.DecodeError) string {
	msg := strings.TrimPrefix(de.Error(), "toml: ")
	rest, ok := strings.CutPrefix(msg, "cannot decode TOML ")
	if !ok || key == "" {
		return msg
	}
	got, _, _ := strings.Cut(rest, " ")
	want := "a string"
	switch key[strings.LastIndexByte(key, '.')+1:] {
	case "id", "cpus":
		want = "an integer"
	case "extra_args", "hostfwd":
		want = "a list of strings"
	case "disks", "networks":
		want = "a list of tables ([[" + key + "]])"
	default:
		if k, ok := deviceKeyKinds[key[strings.LastIndexByte(key, '.')+1:]]; ok {
			want = k
		}
	}
	return fmt.Sprintf("want %s, not a TOML %s", want, got)
}

// fillVM copies a decoded file into vm, applying the defaults for what the
// file leaves out and recording in c what cannot be copied.
func fillVM(vm *VM, fv *fileVM, c *checker) {
	if fv.ID == 0 {
		c.add("id", "missing (give the VM a number no other definition uses)")
	} else if int64(int(fv.ID)) != fv.ID || fv.ID < 0 {
		c.add("id", "%d is not a positive number", fv.ID)
	} else {
		vm.ID = int(fv.ID)
	}
	if err := ValidName(vm.Name); err != nil {
		c.add("name", "%v (it is the file's name: rename the file)", err)
	} else if fv.Name != "" && fv.Name != vm.Name {
		c.add("name", "%q does not match the file's name %q", fv.Name, filepath.Base(vm.File))
	}
	switch m := fv.Memory.(type) {
	case nil:
		vm.Memory = DefaultMemory
	case string:
		n, err := units.ParseSize(m)
		if err != nil {
			c.add("memory", "%s", err)
		} else {
			vm.Memory = n
		}
	case int64:
		c.add("memory", "want a size as a string, like \"%dM\", not the number %d", m, m)
	default:
		c.add("memory", "want a size as a string, like \"512M\"")
	}
	vm.CPUs = DefaultCPUs
	if fv.CPUs != nil {
		if n := *fv.CPUs; n < 1 || n > MaxCPUs {
			c.add("cpus", "%d is out of range (1 to %d)", n, MaxCPUs)
		} else {
			vm.CPUs = int(n)
		}
	}
	vm.Template = fv.Template
	vm.Kernel, vm.Initrd, vm.Append, vm.CDROM = fv.Kernel, fv.Initrd, fv.Append, fv.CDROM
	vm.Boot, vm.Accel, vm.Machine = Boot(fv.Boot), fv.Accel, fv.Machine
	vm.ExtraArgs = nil
	if len(fv.ExtraArgs) > 0 {
		vm.ExtraArgs = fv.ExtraArgs
	}
	vm.Disks = nil
	for _, d := range fv.Disks {
		vm.Disks = append(vm.Disks, Disk{Path: d.Path, Format: imageformat.Format(d.Format),
			Bus: d.Bus, IOThread: d.IOThread, Discard: d.Discard, ReadOnly: d.ReadOnly, Cache: d.Cache})
	}
	vm.Networks = nil
	for _, n := range fv.Networks {
		t := NetworkType(n.Type)
		if t == "" {
			t = NetUser
		}
		if len(n.HostFwd) == 0 {
			n.HostFwd = nil
		}
		vm.Networks = append(vm.Networks, Network{Type: t, Bridge: n.Bridge, HostFwd: n.HostFwd, MAC: n.MAC})
	}
	fillDevices(vm, fv, c)
}

// Encode renders vm as the TOML of its definition file.
func Encode(vm *VM) ([]byte, error) {
	cpus := int64(vm.CPUs)
	fv := fileVM{
		ID:        int64(vm.ID),
		Name:      vm.Name,
		Template:  vm.Template,
		Memory:    FormatMemory(vm.Memory),
		CPUs:      &cpus,
		Kernel:    vm.Kernel,
		Initrd:    vm.Initrd,
		Append:    vm.Append,
		CDROM:     vm.CDROM,
		Boot:      string(vm.Boot),
		Accel:     vm.Accel,
		Machine:   vm.Machine,
		ExtraArgs: vm.ExtraArgs,
	}
	for _, d := range vm.Disks {
		fv.Disks = append(fv.Disks, fileDisk{Path: d.Path, Format: string(d.Format),
			Bus: d.Bus, IOThread: d.IOThread, Discard: d.Discard, ReadOnly: d.ReadOnly, Cache: d.Cache})
	}
	for _, n := range vm.Networks {
		fv.Networks = append(fv.Networks, fileNetwork{Type: string(n.Type), Bridge: n.Bridge, HostFwd: n.HostFwd, MAC: n.MAC})
	}
	encodeDevices(&fv, vm)
	var buf bytes.Buffer
	buf.WriteString(fileHeader)
	enc := toml.NewEncoder(&buf).SetIndentTables(false)
	if err := enc.Encode(&fv); err != nil {
		return nil, fmt.Errorf("encode %s: %w", vm.Name, err)
	}
	return buf.Bytes(), nil
}

// NameOf returns the name that a definition's TOML gives (its name key),
// or "" when it gives none or does not parse: for a definition that comes
// without its file (a vm stream's), to Decode it under its own name.
func NameOf(data []byte) string {
	var fv struct {
		Name string `toml:"name"`
	}
	if toml.Unmarshal(data, &fv) != nil {
		return ""
	}
	return fv.Name
}
