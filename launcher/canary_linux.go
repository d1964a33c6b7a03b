package launcher

import (
	"fmt"
	"maps"

	"github.com/relaunch/relaunch/sdlisten"
)

// The canary (--canary PCT:DURATION): a new generation, once ready (and
// healthy), gets PCT of new connections for DURATION while the current
// one keeps the rest and is not told to drain. Then it is promoted: it
// gets every new connection and the old one drains as after any upgrade.
// Its exit, failsInARow failed health probes, or `relaunch abort` end it
// instead: every new connection goes back to the current generation, and
// the canary is drained (or was gone). A canary is never restarted.
// `relaunch promote` promotes it at once. Upgrades asked for meanwhile wait
// for the end of the canary.

// route is what the steered pools do now: new connections to the steered
// slot, a canary's share to its slot, probes to the generation they test.
func (l *launcher) route() sdlisten.Route {
	r := sdlisten.Route{Slots: []int{l.steerSlot}, Probes: maps.Clone(l.probes)} // the pool keeps it
	if l.cur != nil && l.cur.workers != nil {
		r.Slots = l.cur.upSlots()
	}
	if l.canary != nil {
		r.Canary, r.CanaryPct = l.canary.upSlots(), l.cfg.Canary.Pct
	}
	return r
}

// applyRoute sets the route on every steered pool.
func (l *launcher) applyRoute() {
	r := l.route()
	if l.nWorkers > 0 {
		l.routedTo(r.Slots)
	}
	for i, ln := range l.cfg.Listeners {
		if ln.Pool == nil || l.frozen[i] >= 0 {
			continue
		}
		if err := ln.Pool.SetRoute(r); err != nil {
			// The program attached before still decides: its slot is shared.
			l.frozen[i] = l.steerSlot
			if prev := ln.Pool.Route().Slots; len(prev) > 0 {
				l.frozen[i] = prev[0]
			}
			l.log.Warn(fmt.Sprintf("cannot steer %s: %v; it is shared by every generation from now on", ln.Pool.Addr(), err))
		}
	}
}

// wantsCanary says whether g, ready, becomes a canary rather than current.
func (l *launcher) wantsCanary(g *generation) bool {
	return l.cfg.Canary.Pct > 0 && l.cur != nil && !l.cur.exited && l.steered() && !g.wasCanary
}

func (l *launcher) startCanary(g *generation, how string) {
	g.state, g.readyAt, g.readyHow, g.wasCanary = canary, l.sys.now(), how, true
	l.canary, l.next = g, nil
	l.canaryEnds = l.sys.now().Add(l.cfg.Canary.For)
	for _, s := range g.slots() {
		delete(l.awaySince, s)
	}
	l.applyRoute()
	l.log.Info(fmt.Sprintf("%s ready in %s: %s; it is a canary: %d%% of new connections for %s, %s keeps the rest (relaunch promote or abort ends it early)",
		g, ms(g.readyAt.Sub(g.started)), how, l.cfg.Canary.Pct, l.cfg.Canary.For, l.cur),
		"generation", g.id, "pid", g.pid, "ready_ms", g.readyAt.Sub(g.started).Milliseconds(), "how", how,
		"canary_pct", l.cfg.Canary.Pct)
	l.outer.send(fmt.Sprintf("STATUS=%s serving, %s a canary (%d%%)", l.cur, g, l.cfg.Canary.Pct))
	l.after(g, l.cfg.Canary.For, func() { l.promoteCanary(fmt.Sprintf("%s passed", l.cfg.Canary.For)) })
	l.watchHealth(g)
}

// promoteCanary gives the canary every new connection; the old
// generation drains.
func (l *launcher) promoteCanary(why string) {
	g := l.canary
	if g == nil || g.exited {
		return
	}
	l.canary = nil
	l.next = g // as a generation that just became ready
	l.log.Info(fmt.Sprintf("canary %s promoted (%s): it gets every new connection", g, why), "generation", g.id, "pid", g.pid)
	l.onReady(g, "canary promoted: "+why)
}

// abortCanary sends every new connection back to the current generation
// and drains the canary, unless it is gone already.
func (l *launcher) abortCanary(why string) {
	g := l.canary
	if g == nil {
		return
	}
	l.canary = nil
	if l.abandoned == nil {
		l.abandoned = map[int]bool{}
	}
	for _, s := range g.slots() {
		l.awaySince[s] = l.sys.now()
		l.abandoned[s] = true
	}
	l.applyRoute()
	reason := "canary aborted: " + why
	l.log.Error(fmt.Sprintf("%s: %s; every new connection goes to %s again", g, reason, l.cur),
		"generation", g.id, "pid", g.pid, "reason", reason)
	if !g.exited {
		g.failReason = "canary aborted"
		l.handOver(g)
	}
	l.upgradeFailed(reason)
	if l.pending != "" {
		p := l.pending
		l.pending = ""
		l.upgrade(p)
	}
}

// onCanaryExit: a canary that exits, by itself or killed, ends the canary.
func (l *launcher) onCanaryExit(g *generation, how string) {
	l.abortCanary(fmt.Sprintf("%s exited (%s)", g, how))
}

// curGone: the current generation exited while a canary ran; the canary,
// ready and serving part of the traffic, takes over at once.
func (l *launcher) curGoneDuringCanary(g *generation) bool {
	if l.canary == nil {
		return false
	}
	l.log.Warn(fmt.Sprintf("%s exited while %s was a canary: promoting the canary", g, l.canary))
	l.promoteCanary(fmt.Sprintf("%s exited", g))
	return true
}

// controlCanary answers `relaunch promote` and `relaunch abort`.
func (l *launcher) controlCanary(cmd string) Answer {
	g := l.canary
	if g == nil {
		return Answer{Error: "no canary is running (relaunch --canary PCT:DURATION makes each upgrade one)"}
	}
	if cmd == "promote" {
		l.promoteCanary("relaunch promote")
		return Answer{Said: fmt.Sprintf("canary %s promoted: it gets every new connection, and the previous generation drains", g)}
	}
	cur := l.cur
	l.abortCanary("relaunch abort")
	if cur == nil {
		return Answer{Said: fmt.Sprintf("canary %s aborted", g)}
	}
	return Answer{Said: fmt.Sprintf("canary %s aborted: %s serves every new connection", g, cur)}
}

// canaryStatus is the canary's part of status.
func (l *launcher) canaryStatus() *CanaryStatus {
	g := l.canary
	if g == nil {
		return nil
	}
	return &CanaryStatus{Generation: g.id, Pid: g.pid, Pct: l.cfg.Canary.Pct, EndsAt: l.canaryEnds,
		LeftMS: max(0, l.canaryEnds.Sub(l.sys.now()).Milliseconds())}
}
