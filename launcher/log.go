package launcher

import (
	"context"
	"io"
	"log/slog"
	"sync"
)

// NewLogger returns relaunch's logger on w: with json, one JSON object a line
// (time, level, msg and the fields: gen, pid, reason…); otherwise one
// readable line a message, "relaunch: msg", with "warning: " or "error: "
// before the message when it is one. The text form leaves the fields out:
// every message already says them in words.
func NewLogger(w io.Writer, json bool) *slog.Logger {
	if json {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(&textHandler{w: w, mu: new(sync.Mutex)})
}

type textHandler struct {
	w  io.Writer
	mu *sync.Mutex
}

func (h *textHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *textHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *textHandler) WithGroup(string) slog.Handler                { return h }

func (h *textHandler) Handle(_ context.Context, r slog.Record) error {
	prefix := "relaunch: "
	switch {
	case r.Level >= slog.LevelError:
		prefix += "error: "
	case r.Level >= slog.LevelWarn:
		prefix += "warning: "
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, prefix+r.Message+"\n")
	return err
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
