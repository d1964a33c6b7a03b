package launcher

import (
	"time"

	"github.com/relaunch/relaunch/internal/keeper"
)

// Taken is what OpenListeners took back from a relaunch that died, for
// Run (Config.Taken): the keeper that held the sockets (nil under
// systemd's fd store) and the state that relaunch saved (keeper_linux.go).
type Taken struct {
	keeper  *keeper.Client
	state   *savedState
	stateFd int // the saved state's memfd, written again from now on; -1: none
}

// savedState is relaunch.state: what a relaunch started after this one's
// death needs beyond the sockets.
type savedState struct {
	Format int        `json:"format"`
	LastID int        `json:"last_id"`
	Gens   []savedGen `json:"gens"`
}

type savedGen struct {
	ID      int       `json:"id"`
	Pid     int       `json:"pid"`
	Slot    int       `json:"slot"`
	State   string    `json:"state"`
	DrainAt time.Time `json:"drain_at,omitzero"`
}
