package vm

import (
	"errors"
	"fmt"
	"strings"

	"github.com/vmtui/vmtui/config"
)

// ErrStateNotSavable is returned when QEMU cannot save a running guest's
// state because of a device of its definition.
var ErrStateNotSavable = errors.New("its running state cannot be saved")

// checkSavable returns an error wrapping ErrStateNotSavable when def has
// devices whose state QEMU 7.2 cannot migrate (and so cannot send, save or
// snapshot with the guest's RAM): virtio-fs shares (vhost-user-fs) and VFIO
// host devices. It says so before the guest is paused, where QEMU would say
// it only once asked, naming a PCI address.
func checkSavable(def *config.VM) error {
	var devs []string
	if n := len(def.Shares); n > 0 {
		tags := make([]string, n)
		for i, s := range def.Shares {
			tags[i] = s.Tag
		}
		devs = append(devs, fmt.Sprintf("shared folders (virtio-fs: %s)", strings.Join(tags, ", ")))
	}
	if n := len(def.HostDevs); n > 0 {
		addrs := make([]string, n)
		for i, h := range def.HostDevs {
			addrs[i] = h.Address
		}
		devs = append(devs, fmt.Sprintf("host devices (VFIO: %s)", strings.Join(addrs, ", ")))
	}
	if len(devs) == 0 {
		return nil
	}
	return fmt.Errorf("%w: QEMU cannot save the state of its %s; stop the vm first (a stopped vm's snapshots hold its disks)",
		ErrStateNotSavable, strings.Join(devs, " and "))
}
