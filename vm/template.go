package vm

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/config/store"
)

// Templates: a VM that has instances (instance.go). Its disks are the
// backing files of its instances' overlays, so while it has instances it
// neither starts (its guest would write them) nor is removed; Start and
// Remove ask templateInUse under the VM's lock, which CreateInstance holds
// too.

// ErrTemplateInUse is what the error of a start or remove of a template
// that has instances wraps.
var ErrTemplateInUse = errors.New("vm is the template of instances")

// Instances returns the names of the VMs defined as instances of the VM
// called name, sorted. A broken definition counts when its template key
// could be read.
func (m *Manager) Instances(name string) ([]string, error) {
	defs, err := m.store.List()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range defs {
		if d.Template == name && d.Name != name {
			out = append(out, d.Name)
		}
	}
	slices.Sort(out)
	return out, nil
}

// templateInUse returns an error wrapping ErrTemplateInUse, naming the
// instances, when the VM called name has some; why says what that forbids.
func (m *Manager) templateInUse(name, why string) error {
	insts, err := m.Instances(name)
	if err != nil {
		return err
	}
	if len(insts) == 0 {
		return nil
	}
	return &templateError{name: name, instances: insts, why: why}
}

// templateError is the refusal of templateInUse.
type templateError struct {
	name      string
	instances []string
	why       string
}

func (e *templateError) Error() string {
	names := make([]string, len(e.instances))
	for i, n := range e.instances {
		names[i] = config.DisplayName(n)
	}
	list := names[0]
	if len(names) > 1 {
		list = strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
	}
	return fmt.Sprintf("vm %s is the template of %s: %s", config.DisplayName(e.name), list, e.why)
}

func (e *templateError) Unwrap() error { return ErrTemplateInUse }

// Reasons for templateInUse.
const (
	whyNoStart  = "its disks are its instances' base images and must not change; remove the instances first"
	whyNoRemove = "remove the instances first"
)

// templateStart is what a start of the VM called name asks of it as a
// template, under its lock: no instances (templateInUse); and with none,
// the state its instances resumed, made from a saved state the start is
// about to resume or discard, goes.
func (m *Manager) templateStart(name string) error {
	if err := m.templateInUse(name, whyNoStart); err != nil {
		return err
	}
	return m.removeClone(name)
}

// instanceRemoved is called once instance def is removed: when its
// template has no instances left, the state they resumed goes too. It
// does so only if the template's lock is free at once (taking it waiting
// could deadlock with a CreateInstance, which holds it and waits for an
// instance's); otherwise the next start of the template removes it.
func (m *Manager) instanceRemoved(def *config.VM) {
	if def.Template == "" || config.ValidName(def.Template) != nil {
		return
	}
	lock, err := store.TryLock(m.paths.LockFile(def.Template))
	if err != nil {
		return
	}
	defer lock.Unlock()
	if insts, err := m.Instances(def.Template); err == nil && len(insts) == 0 {
		m.removeClone(def.Template)
	}
}
