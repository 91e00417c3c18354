package vm

import (
	"fmt"
	"os"

	"github.com/vmtui/vmtui/config"
	"github.com/vmtui/vmtui/disk"
)

// specDevices resolves the device keys of def into s: the topology, memory
// and its knobs, the fixed CID (a CID for vsock = true is allocated at
// start: allocCID), the shares (whose directories must exist) and the host
// devices' addresses, normalised.
func specDevices(s *Spec, def *config.VM) error {
	if def.HasTopology() {
		s.Sockets, s.Cores, s.Threads = def.Topology()
	}
	if def.MaxMemory > def.Memory {
		s.MaxMemory = def.MaxMemory
	}
	s.HugePages, s.MLock, s.Prealloc = def.HugePages, def.MLock, def.Prealloc
	s.CID = def.CID
	for i, sh := range def.Shares {
		fi, err := os.Stat(sh.Path)
		if err != nil {
			return fmt.Errorf("shares[%d]: could not find shared directory %q: %w", i, sh.Path, disk.PathCause(err))
		}
		if !fi.IsDir() {
			return fmt.Errorf("shares[%d]: shared path %q is not a directory", i, sh.Path)
		}
		s.Shares = append(s.Shares, ShareSpec{Path: sh.Path, Tag: sh.Tag, ReadOnly: sh.ReadOnly})
	}
	for i, h := range def.HostDevs {
		a, err := config.ParsePCIAddress(h.Address)
		if err != nil {
			return fmt.Errorf("hostdevs[%d]: %w", i, err)
		}
		s.HostDevs = append(s.HostDevs, a)
	}
	return nil
}
