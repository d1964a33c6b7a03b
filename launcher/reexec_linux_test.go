package launcher

import (
	"encoding/json"
	"strings"
	"testing"
)

// The check before a re-exec: the new build must read the state the
// running relaunch writes, all of it, or the re-exec is refused.
func TestCheckState(t *testing.T) {
	good, _ := json.Marshal(reexecState{Format: stateFormat, Gens: []keptGen{{ID: 1, Pid: 2, State: draining}}})
	if err := CheckState(strings.NewReader(string(good))); err != nil {
		t.Errorf("a state of this build: %v", err)
	}
	for _, c := range []struct{ state, want string }{
		{`{"format":2}`, "reads state format 1, the running relaunch writes 2"},
		{`{"format":1,"sessions":[]}`, `cannot read the running relaunch's state: json: unknown field "sessions"`},
		{`{"format":1,"gens":[{"id":"x"}]}`, "cannot read the running relaunch's state"},
		{``, "cannot read the running relaunch's state: EOF"},
	} {
		err := CheckState(strings.NewReader(c.state))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("CheckState(%q) = %v; want %q", c.state, err, c.want)
		}
	}
}
