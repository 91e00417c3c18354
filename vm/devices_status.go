package vm

import (
	"cmp"
	"slices"

	"github.com/vmtui/vmtui/config"
)

// DeviceInfo is the device model of a definition as status --json reports
// it, under the names of its keys; nil when the definition sets none.
type DeviceInfo struct {
	Sockets   int         `json:"sockets,omitempty"`
	Cores     int         `json:"cores,omitempty"`
	Threads   int         `json:"threads,omitempty"`
	MaxMemory int64       `json:"max_memory,omitempty"` // bytes
	HugePages bool        `json:"hugepages,omitempty"`
	MLock     bool        `json:"mlock,omitempty"`
	Prealloc  bool        `json:"prealloc,omitempty"`
	Vsock     bool        `json:"vsock,omitempty"` // the guest has a vsock device (Status.CID is its CID once known)
	Shares    []ShareInfo `json:"shares,omitempty"`
	HostDevs  []string    `json:"hostdevs,omitempty"`
	// Disks are the options of the definition's disks, in its order,
	// when one of them sets any.
	Disks []DiskInfo `json:"disks,omitempty"`
}

// ShareInfo is a shared folder.
type ShareInfo struct {
	Path     string `json:"path"`
	Tag      string `json:"tag"`
	ReadOnly bool   `json:"readonly,omitempty"`
}

// DiskInfo is a disk's options.
type DiskInfo struct {
	Path     string `json:"path"`
	Bus      string `json:"bus"`
	IOThread bool   `json:"iothread,omitempty"`
	Discard  bool   `json:"discard,omitempty"`
	ReadOnly bool   `json:"readonly,omitempty"`
	Cache    string `json:"cache"`
}

// deviceInfo returns def's device model, nil when it sets none.
func deviceInfo(def *config.VM) *DeviceInfo {
	d := &DeviceInfo{
		Sockets: def.Sockets, Cores: def.Cores, Threads: def.Threads,
		HugePages: def.HugePages, MLock: def.MLock, Prealloc: def.Prealloc, Vsock: def.HasVsock(),
	}
	if def.HasTopology() {
		d.Sockets, d.Cores, d.Threads = def.Topology()
	}
	if def.MaxMemory > def.Memory {
		d.MaxMemory = def.MaxMemory
	}
	for _, s := range def.Shares {
		d.Shares = append(d.Shares, ShareInfo{Path: s.Path, Tag: s.Tag, ReadOnly: s.ReadOnly})
	}
	for _, h := range def.HostDevs {
		d.HostDevs = append(d.HostDevs, h.Address)
	}
	options := slices.ContainsFunc(def.Disks, func(k config.Disk) bool {
		return k.Bus != "" || k.IOThread || k.Discard || k.ReadOnly || k.Cache != ""
	})
	if options {
		for _, k := range def.Disks {
			d.Disks = append(d.Disks, DiskInfo{Path: k.Path, Bus: cmp.Or(k.Bus, config.BusVirtio), IOThread: k.IOThread,
				Discard: k.Discard, ReadOnly: k.ReadOnly, Cache: cmp.Or(k.Cache, config.CacheWriteback)})
		}
	}
	if d.Sockets == 0 && d.MaxMemory == 0 && !d.HugePages && !d.MLock && !d.Prealloc && !d.Vsock &&
		d.Shares == nil && d.HostDevs == nil && d.Disks == nil {
		return nil
	}
	return d
}
