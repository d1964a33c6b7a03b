package launcher

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/relaunch/relaunch/internal/listenprobe"
	"github.com/relaunch/relaunch/sdlisten"
)

// exclusive says who already listens (udp: is bound) where a would bind,
// as an error naming them; nil when nobody does or it cannot be told
// (binding then decides).
func exclusive(a sdlisten.Addr) error {
	if a.Network == "unix" {
		return nil // a live socket file is refused when binding
	}
	ap, dual, err := a.Endpoint()
	if err != nil || ap.Port() == 0 {
		return nil
	}
	hs, err := listenprobe.InUse(strings.HasPrefix(a.Network, "udp"), ap, dual)
	if err != nil || len(hs) == 0 {
		return nil
	}
	var who []string
	seen := map[int]bool{}
	foreign := -1 // the uid of holders relaunch may not adopt
	for _, h := range hs {
		if h.Uid != os.Geteuid() && os.Geteuid() != 0 {
			foreign = h.Uid
		}
		if seen[h.Pid] {
			continue
		}
		seen[h.Pid] = true
		s := h.String()
		if gen := orphanGeneration(h.Pid); gen != "" {
			s += ": generation " + gen
		} else if h.Pid > 0 && isRelaunch(h.Pid) {
			s += ": another relaunch"
		}
		who = append(who, s)
	}
	if len(who) > 3 {
		who = append(who[:3], fmt.Sprintf("%d more", len(who)-3))
	}
	hint := "stop it, or choose another address"
	if len(seen) > 1 {
		hint = "stop them, or choose another address"
	}
	if foreign >= 0 {
		hint = fmt.Sprintf("relaunch (uid %d) may not take it over: run relaunch as uid %d or root to adopt what a relaunch left there, or stop it, or choose another address", os.Geteuid(), foreign)
	}
	return fmt.Errorf("%s is in use by %s; %s", a, strings.Join(who, ", "), hint)
}

// orphanGeneration says which generation of which relaunch pid is, when a
// relaunch started it: "3 of relaunch pid 4200", or "3 of a relaunch that is
// gone" when it outlived it (it was reparented); "" otherwise.
func orphanGeneration(pid int) string {
	id := 0
	if pid > 0 {
		id, _ = generationOf(pid)
	}
	if id == 0 {
		return ""
	}
	if ppid, _, ok := procStat(pid); ok && isRelaunch(ppid) {
		return strconv.Itoa(id) + " of relaunch pid " + strconv.Itoa(ppid)
	}
	return strconv.Itoa(id) + " of a relaunch that is gone"
}

// isRelaunch says whether pid runs relaunch: its binary is called
// relaunch, or relaunch-SOMETHING (a versioned copy), deleted or not.
func isRelaunch(pid int) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	base := strings.TrimSuffix(filepath.Base(exe), " (deleted)")
	return err == nil && (base == "relaunch" || strings.HasPrefix(base, "relaunch-"))
}

// readBounded reads at most n bytes of path.
func readBounded(path string, n int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, n))
}
