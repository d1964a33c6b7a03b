package main

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"slices"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"github.com/relaunch/relaunch/internal/loadtest"
)

// The plot: one panel per run (relaunch, naive), the latency of every
// request over time on a log scale, failed requests in red, the upgrade
// windows shaded and the triggers as vertical lines; a legend row below, and
// what the axes are (not as axis labels: gonum places a vertical one as if
// the scale were linear, and pads a log scale's panel for it).
// gonum/plot draws it; only this benchmark links it, not relaunch.

const (
	plotW   = 1600 // pixels
	panelH  = 470
	legendH = 64
	dpi     = 96
)

// Sans serif reads better than gonum's default serif at these sizes.
func init() { plot.DefaultFont.Variant = "Sans" }

// px is n pixels of the PNG in gonum's unit (points).
func px(n float64) vg.Length { return vg.Length(n) * vg.Inch / dpi }

var (
	colGrid    = color.RGBA{215, 215, 215, 255}
	colGrid2   = color.RGBA{238, 238, 238, 255}
	colOK      = color.RGBA{30, 90, 200, 255}
	colErr     = color.RGBA{215, 25, 25, 255}
	colWindow  = color.RGBA{255, 243, 205, 255}
	colControl = color.RGBA{222, 234, 246, 255}
	colSignal  = color.RGBA{235, 125, 0, 255}
	colRename  = color.RGBA{0, 150, 70, 255}
	colRestart = color.RGBA{140, 60, 180, 255}
)

func kindColor(kind string) color.RGBA {
	switch kind {
	case "SIGUSR2":
		return colSignal
	case "rename":
		return colRename
	}
	return colRestart
}

// panel is what one run's panel shows: x in seconds since the load
// started, y in seconds of latency.
type panel struct {
	title      string
	span       float64 // the x axis: 0 to span
	lo, hi     float64 // the y axis: whole decades
	ok, failed plotter.XYs
	windows    bands   // the upgrades, trigger to first answer + window
	controls   bands   // the poller alone, without an upgrade
	triggers   []marks // one per kind of upgrade, in order of appearance
}

// writePlot draws both runs into a PNG at path.
func writePlot(path string, cfg config, rl, naive *phase) error {
	img := render(cfg, panels(cfg, []*phase{rl, naive}))
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	err = png.Encode(f, img)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func panels(cfg config, phases []*phase) []panel {
	// One latency scale for every panel, whole decades around the data.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range phases {
		for _, s := range p.res.Samples {
			if s.Latency > 0 {
				lo = min(lo, s.Latency.Seconds())
				hi = max(hi, s.Latency.Seconds())
			}
		}
	}
	if math.IsInf(lo, 1) {
		lo, hi = 1e-4, 1e-2
	}
	lo = math.Pow(10, math.Floor(math.Log10(max(lo, 1e-6))))
	hi = math.Pow(10, math.Ceil(math.Log10(max(hi, lo*100))))

	var pns []panel
	for _, p := range phases {
		pns = append(pns, newPanel(cfg, p, lo, hi))
	}
	return pns
}

func newPanel(cfg config, p *phase, lo, hi float64) panel {
	sec := func(t time.Time) float64 { return t.Sub(p.res.Start).Seconds() }
	spans := func(wins [][2]time.Time) [][2]float64 {
		s := make([][2]float64, len(wins))
		for i, w := range wins {
			s[i] = [2]float64{sec(w[0]), sec(w[1])}
		}
		return s
	}
	pn := panel{
		title:    panelTitle(cfg, p),
		span:     max(p.res.Elapsed.Seconds(), 1),
		lo:       lo,
		hi:       hi,
		windows:  bands{color: colWindow, spans: spans(p.windows(cfg.window))},
		controls: bands{color: colControl, spans: spans(p.controls)},
	}
	for _, s := range p.res.Samples {
		// A log scale has no 0: a request that failed at once sits on the floor.
		xy := plotter.XY{X: sec(s.Start), Y: min(max(s.Latency.Seconds(), lo), hi)}
		if s.Err == "" {
			pn.ok = append(pn.ok, xy)
		} else {
			pn.failed = append(pn.failed, xy)
		}
	}
	for _, u := range p.upgrades {
		i := slices.IndexFunc(pn.triggers, func(m marks) bool { return m.kind == u.kind })
		if i < 0 {
			i = len(pn.triggers)
			pn.triggers = append(pn.triggers, marks{kind: u.kind, color: kindColor(u.kind)})
		}
		pn.triggers[i].xs = append(pn.triggers[i].xs, sec(u.trigger))
	}
	return pn
}

func (pn panel) plot() *plot.Plot {
	pl := plot.New()
	pl.Title.Text = pn.title
	pl.Title.Padding = px(6)
	pl.X.Tick.Marker = plot.TickerFunc(timeTicks)
	pl.X.Padding = 0
	pl.Y.Scale = plot.LogScale{}
	pl.Y.Tick.Marker = plot.TickerFunc(latTicks)
	pl.Y.Padding = 0

	grid := plotter.NewGrid()
	grid.Vertical = draw.LineStyle{Color: colGrid2, Width: px(1)}
	grid.Horizontal = draw.LineStyle{Color: colGrid, Width: px(1)}
	pl.Add(pn.controls, pn.windows, grid)
	for _, m := range pn.triggers {
		pl.Add(m)
	}
	// Successful requests translucent, so that density shows; failed ones on top.
	pl.Add(&plotter.Scatter{XYs: pn.ok, GlyphStyle: draw.GlyphStyle{
		Color: color.NRGBA{colOK.R, colOK.G, colOK.B, 64}, Shape: draw.BoxGlyph{}, Radius: px(1)}})
	pl.Add(&plotter.Scatter{XYs: pn.failed, GlyphStyle: draw.GlyphStyle{
		Color: color.NRGBA{colErr.R, colErr.G, colErr.B, 230}, Shape: draw.BoxGlyph{}, Radius: px(1.5)}})
	// After Add, which widens the axes to the data.
	pl.X.Min, pl.X.Max = 0, pn.span
	pl.Y.Min, pl.Y.Max = pn.lo, pn.hi
	return pl
}

// render draws the panels one above the other, their plot areas aligned,
// and the legend below them.
func render(cfg config, pns []panel) image.Image {
	c := vgimg.NewWith(vgimg.UseWH(px(plotW), px(float64(panelH*len(pns)+legendH))), vgimg.UseDPI(dpi))
	dc := draw.New(c)
	plots := make([][]*plot.Plot, len(pns))
	for i, pn := range pns {
		plots[i] = []*plot.Plot{pn.plot()}
	}
	tiles := draw.Tiles{Rows: len(pns), Cols: 1, PadTop: px(10), PadBottom: px(4), PadLeft: px(8), PadRight: px(24), PadY: px(20)}
	cs := plot.Align(plots, tiles, draw.Crop(dc, 0, 0, px(legendH), 0))
	for i := range plots {
		plots[i][0].Draw(cs[i][0])
	}

	legend := draw.Crop(dc, plots[0][0].DataCanvas(cs[0][0]).Min.X-dc.Min.X, 0, 0, px(legendH)-(dc.Max.Y-dc.Min.Y))
	drawLegend(legend, plots[0][0].Legend.TextStyle, legendItems(cfg))
	return c.Image()
}

type legendItem struct {
	label string
	thumb plot.Thumbnailer
}

func legendItems(cfg config) []legendItem {
	return []legendItem{
		{"request", swatch(colOK)},
		{"failed request", swatch(colErr)},
		{"SIGUSR2", marks{color: colSignal}},
		{"rename", marks{color: colRename}},
		{"naive restart", marks{color: colRestart}},
		{"upgrade: trigger → new answer + " + strings.ReplaceAll(ms(cfg.window), " ", ""), bands{color: colWindow}},
		{"poller alone", bands{color: colControl}},
	}
}

// drawLegend writes the items side by side on one line at the top of c
// (gonum's own legend stacks them, which would hide the data), and the
// axes on the next line.
func drawLegend(c draw.Canvas, sty text.Style, items []legendItem) {
	thumbW, gap := px(14), px(6)
	h := sty.Height("Mg")
	x, y := c.Min.X, c.Max.Y-px(8)-h
	for _, it := range items {
		it.thumb.Thumbnail(&draw.Canvas{Canvas: c.Canvas, Rectangle: vg.Rectangle{
			Min: vg.Point{X: x, Y: y}, Max: vg.Point{X: x + thumbW, Y: y + h}}})
		x += thumbW + gap
		c.FillText(sty, vg.Point{X: x, Y: y}, it.label)
		x += sty.Width(it.label) + 4*gap
	}
	c.FillText(sty, vg.Point{X: c.Min.X, Y: y - h - px(6)},
		"y: latency of each request (log scale); x: time since the load started, one point per request at its start")
}

// bands shades spans of x over the whole height of the plot.
type bands struct {
	color color.Color
	spans [][2]float64
}

func (b bands) Plot(c draw.Canvas, pl *plot.Plot) {
	trX, _ := pl.Transforms(&c)
	for _, s := range b.spans {
		x0, x1 := max(trX(s[0]), c.Min.X), min(trX(s[1]), c.Max.X)
		if x0 < x1 {
			c.FillPolygon(b.color, rect(x0, c.Min.Y, x1, c.Max.Y))
		}
	}
}

func (b bands) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(b.color, rect(c.Min.X, c.Min.Y, c.Max.X, c.Max.Y))
}

// marks draws a vertical line at each x: the triggers of one kind.
type marks struct {
	kind  string
	color color.Color
	xs    []float64
}

func (m marks) style() draw.LineStyle { return draw.LineStyle{Color: m.color, Width: px(2)} }

func (m marks) Plot(c draw.Canvas, pl *plot.Plot) {
	trX, _ := pl.Transforms(&c)
	for _, x := range m.xs {
		if x := trX(x); c.ContainsX(x) {
			c.StrokeLine2(m.style(), x, c.Min.Y, x, c.Max.Y)
		}
	}
}

func (m marks) Thumbnail(c *draw.Canvas) {
	x := c.Center().X
	c.StrokeLine2(m.style(), x, c.Min.Y-px(2), x, c.Max.Y+px(2))
}

// swatch is a legend's square of colour.
type swatch color.RGBA

func (s swatch) Thumbnail(c *draw.Canvas) {
	m, r := c.Center(), px(5)
	c.FillPolygon(color.RGBA(s), rect(m.X-r, m.Y-r, m.X+r, m.Y+r))
}

func rect(x0, y0, x1, y1 vg.Length) []vg.Point {
	return []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}}
}

// timeTicks labels the time axis every tickStep seconds.
func timeTicks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	step := tickStep(hi - lo)
	for s := 0.0; s <= hi+1e-9; s += step {
		ts = append(ts, plot.Tick{Value: s, Label: fmt.Sprintf("%gs", s)})
	}
	return ts
}

// latTicks labels the decades of the latency axis, with minor ticks at
// 2× and 5×.
func latTicks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for d := lo; d <= hi*1.0001; d *= 10 {
		ts = append(ts, plot.Tick{Value: d, Label: latLabel(d)})
		for _, m := range []float64{2, 5} {
			if d*m < hi {
				ts = append(ts, plot.Tick{Value: d * m})
			}
		}
	}
	return ts
}

func panelTitle(cfg config, p *phase) string {
	res := p.res
	if p.name == "relaunch" {
		return fmt.Sprintf("relaunch: %d upgrades (%d SIGUSR2, %d rename), %d requests at %.0f/s, %s",
			len(p.upgrades), countKind(p.upgrades, "SIGUSR2"), countKind(p.upgrades, "rename"), res.Total, cfg.rate, errorsTitle(res))
	}
	return fmt.Sprintf("naive: %d restarts (SIGTERM, wait for exit, start), %d requests at %.0f/s, %s",
		len(p.upgrades), res.Total, cfg.rate, errorsTitle(res))
}

func errorsTitle(res *loadtest.Result) string {
	if res.Failed() == 0 {
		return "0 errors"
	}
	return fmt.Sprintf("%d errors (%s)", res.Failed(), kinds(res.Errors))
}

func countKind(us []upgrade, kind string) int {
	n := 0
	for _, u := range us {
		if u.kind == kind {
			n++
		}
	}
	return n
}

// latLabel is "10µs", "1ms", "100ms", "1s" for a power of ten of seconds.
func latLabel(sec float64) string {
	switch {
	case sec < 1e-3-1e-12:
		return fmt.Sprintf("%.0fµs", sec*1e6)
	case sec < 1-1e-12:
		return fmt.Sprintf("%.0fms", sec*1e3)
	}
	return fmt.Sprintf("%.0fs", sec)
}

// tickStep picks a step for the time axis that gives at most 15 ticks.
func tickStep(span float64) float64 {
	for _, s := range []float64{1, 2, 5, 10, 15, 30, 60, 120, 300} {
		if span/s <= 15 {
			return s
		}
	}
	return 600
}
