package launcher

import (
	"context"
	"io"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// LogOptions shape relaunch's log.
type LogOptions struct {
	JSON bool // one JSON object a line: time, level, msg and the fields (generation, pid, reason…)
	// Quiet (the development loop, --build) prints only warnings, errors
	// and the one summary line of each restart.
	Quiet bool
}

// NewLogger returns relaunch's logger on w: JSON, or one readable line a
// message, "relaunch: msg", with "warning: " or "error: " before the
// message when it is one. The text form leaves the fields out: every
// message already says them in words. It is coloured when w is a terminal
// and NO_COLOR is not set.
func NewLogger(w io.Writer, o LogOptions) *slog.Logger {
	if o.JSON {
		return slog.New(slog.NewJSONHandler(w, nil))
	}
	return slog.New(&textHandler{w: w, mu: new(sync.Mutex), quiet: o.Quiet, color: colorful(w)})
}

func colorful(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), ioctlGetTermios)
	return err == nil
}

// summaryKey marks the one line a restart prints even when quiet.
const summaryKey = "summary"

type textHandler struct {
	w     io.Writer
	mu    *sync.Mutex
	quiet bool
	color bool
}

func (h *textHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }
func (h *textHandler) WithAttrs([]slog.Attr) slog.Handler           { return h }
func (h *textHandler) WithGroup(string) slog.Handler                { return h }

func (h *textHandler) Handle(_ context.Context, r slog.Record) error {
	summary := false
	r.Attrs(func(a slog.Attr) bool {
		summary = summary || a.Key == summaryKey
		return !summary
	})
	if h.quiet && r.Level < slog.LevelWarn && !summary {
		return nil
	}
	prefix, color := "relaunch: ", ""
	switch {
	case r.Level >= slog.LevelError:
		prefix, color = prefix+"error: ", "\x1b[31m"
	case r.Level >= slog.LevelWarn:
		prefix, color = prefix+"warning: ", "\x1b[33m"
	case summary:
		color = "\x1b[32m"
	}
	line := prefix + r.Message
	if h.color && color != "" {
		line = color + line + "\x1b[0m"
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	_, err := io.WriteString(h.w, line+"\n")
	return err
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
