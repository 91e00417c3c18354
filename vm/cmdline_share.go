package vm

import (
	"fmt"
	"strconv"

	"github.com/vmtui/vmtui/config"
)

// shareDev is one virtio-fs share: the vhost-user socket of its virtiofsd
// (chardev fs<i>) and the vhost-user-fs-pci device the guest mounts by its
// tag (mount -t virtiofs TAG DIR). The guest's memory must be shared with
// virtiofsd (see the memory backend): QEMU's Cmdline makes it so whenever
// there are shares.
type shareDev struct {
	index int
	ShareSpec
}

func (d shareDev) args() ([]string, error) {
	if d.Socket == "" {
		return nil, fmt.Errorf("shares[%d]: no virtiofsd socket", d.index)
	}
	if err := checkValue("virtiofsd socket", d.Socket); err != nil {
		return nil, err
	}
	if err := config.ValidShareTag(d.Tag); err != nil {
		return nil, fmt.Errorf("shares[%d]: %w", d.index, err)
	}
	id := "fs" + strconv.Itoa(d.index)
	return []string{
		"-chardev", "socket,id=" + id + "," + opts("path", d.Socket),
		"-device", "vhost-user-fs-pci,chardev=" + id + ",id=" + id + "-dev," + opts("tag", d.Tag),
	}, nil
}

// shareDevs renders the shares in order, refusing two with one tag.
func shareDevs(shares []ShareSpec) ([]device, error) {
	if len(shares) > config.MaxShares {
		return nil, fmt.Errorf("too many shares (%d, at most %d)", len(shares), config.MaxShares)
	}
	var devs []device
	seen := make(map[string]bool)
	for i, sh := range shares {
		if seen[sh.Tag] {
			return nil, fmt.Errorf("shares[%d]: tag %q is also another share's", i, sh.Tag)
		}
		seen[sh.Tag] = true
		devs = append(devs, shareDev{index: i, ShareSpec: sh})
	}
	return devs, nil
}
