package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"strings"
	"time"

	"relaunch/internal/loadtest"
)

// The plot: one panel per run (relaunch, naive), the latency of every
// request over time on a log scale, failed requests in red, the upgrade
// windows shaded and the triggers as vertical lines. Standard library only,
// text included (a 5×7 bitmap font below).

const (
	plotW      = 1600
	panelH     = 470
	legendH    = 64
	marginL    = 92
	marginR    = 24
	panelTop   = 40 // title line above the plot area
	panelBot   = 44 // x labels below it
	fontScale  = 2
	glyphW     = 5
	glyphH     = 7
	glyphAdv   = (glyphW + 1) * fontScale
	lineHeight = (glyphH + 3) * fontScale
)

var (
	colBG      = color.RGBA{255, 255, 255, 255}
	colAxis    = color.RGBA{60, 60, 60, 255}
	colGrid    = color.RGBA{225, 225, 225, 255}
	colGrid2   = color.RGBA{242, 242, 242, 255}
	colText    = color.RGBA{30, 30, 30, 255}
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

// writePlot draws both runs into a PNG at path.
func writePlot(path string, cfg config, rl, naive *phase) error {
	img := plot(cfg, []*phase{rl, naive})
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

func plot(cfg config, phases []*phase) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, plotW, panelH*len(phases)+legendH))
	draw.Draw(img, img.Bounds(), &image.Uniform{colBG}, image.Point{}, draw.Src)

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

	for i, p := range phases {
		drawPanel(img, image.Rect(0, i*panelH, plotW, (i+1)*panelH), cfg, p, lo, hi)
	}
	drawLegend(img, panelH*len(phases), cfg)
	return img
}

func drawPanel(img *image.RGBA, r image.Rectangle, cfg config, p *phase, lo, hi float64) {
	area := image.Rect(r.Min.X+marginL, r.Min.Y+panelTop, r.Max.X-marginR, r.Max.Y-panelBot)
	start := p.res.Start
	span := max(p.res.Elapsed.Seconds(), 1)
	xOf := func(t time.Time) int {
		return area.Min.X + int(t.Sub(start).Seconds()/span*float64(area.Dx()-1)+0.5)
	}
	yOf := func(sec float64) int {
		f := (math.Log10(max(sec, lo)) - math.Log10(lo)) / (math.Log10(hi) - math.Log10(lo))
		return area.Max.Y - 1 - int(min(f, 1)*float64(area.Dy()-1)+0.5)
	}

	drawText(img, r.Min.X+12, r.Min.Y+12, panelTitle(cfg, p), colText)

	// Upgrade and control windows, shaded.
	shade := func(wins [][2]time.Time, c color.RGBA) {
		for _, w := range wins {
			x0, x1 := max(xOf(w[0]), area.Min.X), min(xOf(w[1]), area.Max.X-1)
			fill(img, image.Rect(x0, area.Min.Y, x1+1, area.Max.Y), c)
		}
	}
	shade(p.windows(cfg.window), colWindow)
	shade(p.controls, colControl)
	// Grid: decades, with fainter lines at 2× and 5×; labels on the left.
	for d := lo; d <= hi*1.0001; d *= 10 {
		for _, m := range []float64{2, 5} {
			if d*m < hi {
				hline(img, area.Min.X, area.Max.X, yOf(d*m), colGrid2)
			}
		}
		y := yOf(d)
		hline(img, area.Min.X, area.Max.X, y, colGrid)
		label := latLabel(d)
		drawText(img, area.Min.X-10-textWidth(label), y-glyphH*fontScale/2, label, colText)
	}
	step := tickStep(span)
	for s := 0.0; s <= span+1e-9; s += step {
		x := area.Min.X + int(s/span*float64(area.Dx()-1)+0.5)
		vline(img, x, area.Min.Y, area.Max.Y, colGrid2)
		vline(img, x, area.Max.Y, area.Max.Y+6, colAxis)
		label := fmt.Sprintf("%gs", s)
		drawText(img, x-textWidth(label)/2, area.Max.Y+12, label, colText)
	}
	// Triggers.
	for _, u := range p.upgrades {
		c := kindColor(u.kind)
		x := xOf(u.trigger)
		vline(img, x, area.Min.Y, area.Max.Y, c)
		vline(img, x+1, area.Min.Y, area.Max.Y, c)
	}
	// Requests: successful ones translucent (density shows), failed ones on top.
	for _, s := range p.res.Samples {
		if s.Err == "" {
			dot(img, area, xOf(s.Start), yOf(s.Latency.Seconds()), 2, colOK, 0.25)
		}
	}
	for _, s := range p.res.Samples {
		if s.Err != "" {
			dot(img, area, xOf(s.Start), yOf(s.Latency.Seconds()), 3, colErr, 0.9)
		}
	}
	// Axes.
	hline(img, area.Min.X, area.Max.X, area.Max.Y, colAxis)
	vline(img, area.Min.X-1, area.Min.Y, area.Max.Y+1, colAxis)
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

func drawLegend(img *image.RGBA, top int, cfg config) {
	x, y := marginL, top+8
	item := func(draw func(x, y int), label string) {
		draw(x, y)
		drawText(img, x+22, y, label, colText)
		x += 22 + textWidth(label) + 26
	}
	item(func(x, y int) { fill(img, image.Rect(x, y+2, x+12, y+12), colOK) }, "request")
	item(func(x, y int) { fill(img, image.Rect(x, y+2, x+12, y+12), colErr) }, "failed request")
	for _, k := range []struct{ kind, label string }{{"SIGUSR2", "SIGUSR2"}, {"rename", "rename"}, {"restart", "naive restart"}} {
		c := kindColor(k.kind)
		item(func(x, y int) { fill(img, image.Rect(x+5, y-2, x+8, y+16), c) }, k.label)
	}
	item(func(x, y int) { fill(img, image.Rect(x, y, x+14, y+14), colWindow) }, fmt.Sprintf("upgrade: trigger → new answer + %s", strings.ReplaceAll(ms(cfg.window), " ", "")))
	item(func(x, y int) { fill(img, image.Rect(x, y, x+14, y+14), colControl) }, "poller alone")
	drawText(img, marginL, y+lineHeight+4, "y: latency of each request (log scale); x: time since the load started, one point per request at its start", colText)
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

func fill(img *image.RGBA, r image.Rectangle, c color.RGBA) {
	draw.Draw(img, r.Intersect(img.Bounds()), &image.Uniform{c}, image.Point{}, draw.Src)
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) { fill(img, image.Rect(x0, y, x1, y+1), c) }
func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) { fill(img, image.Rect(x, y0, x+1, y1), c) }

// dot blends an n×n square around (x, y) of colour c with opacity a,
// clipped to area.
func dot(img *image.RGBA, area image.Rectangle, x, y, n int, c color.RGBA, a float64) {
	for yy := y - (n-1)/2; yy <= y+n/2; yy++ {
		for xx := x - (n-1)/2; xx <= x+n/2; xx++ {
			if !(image.Point{xx, yy}.In(area)) {
				continue
			}
			i := img.PixOffset(xx, yy)
			p := img.Pix[i : i+3 : i+3]
			p[0] = uint8(float64(p[0])*(1-a) + float64(c.R)*a + 0.5)
			p[1] = uint8(float64(p[1])*(1-a) + float64(c.G)*a + 0.5)
			p[2] = uint8(float64(p[2])*(1-a) + float64(c.B)*a + 0.5)
		}
	}
}

func textWidth(s string) int { return len([]rune(s)) * glyphAdv }

// drawText writes s with its top-left corner at (x, y).
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for _, ch := range s {
		g, ok := font[ch]
		if !ok {
			g = font['?']
		}
		rows := strings.Fields(g)
		for ry, row := range rows {
			for rx, px := range row {
				if px == '#' {
					fill(img, image.Rect(x+rx*fontScale, y+ry*fontScale, x+(rx+1)*fontScale, y+(ry+1)*fontScale), c)
				}
			}
		}
		x += glyphAdv
	}
}

// font is a 5×7 bitmap font: seven rows of five pixels per glyph, nine for
// those with a descender.
var font = map[rune]string{
	' ': "..... ..... ..... ..... ..... ..... .....",
	'0': ".###. #...# #..## #.#.# ##..# #...# .###.",
	'1': "..#.. .##.. ..#.. ..#.. ..#.. ..#.. .###.",
	'2': ".###. #...# ....# ...#. ..#.. .#... #####",
	'3': "##### ...#. ..#.. ...#. ....# #...# .###.",
	'4': "...#. ..##. .#.#. #..#. ##### ...#. ...#.",
	'5': "##### #.... ####. ....# ....# #...# .###.",
	'6': "..##. .#... #.... ####. #...# #...# .###.",
	'7': "##### ....# ...#. ..#.. .#... .#... .#...",
	'8': ".###. #...# #...# .###. #...# #...# .###.",
	'9': ".###. #...# #...# .#### ....# ...#. .##..",
	'A': ".###. #...# #...# ##### #...# #...# #...#",
	'B': "####. #...# #...# ####. #...# #...# ####.",
	'C': ".###. #...# #.... #.... #.... #...# .###.",
	'D': "###.. #..#. #...# #...# #...# #..#. ###..",
	'E': "##### #.... #.... ####. #.... #.... #####",
	'F': "##### #.... #.... ####. #.... #.... #....",
	'G': ".###. #...# #.... #.### #...# #...# .####",
	'H': "#...# #...# #...# ##### #...# #...# #...#",
	'I': ".###. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
	'J': "..### ...#. ...#. ...#. ...#. #..#. .##..",
	'K': "#...# #..#. #.#.. ##... #.#.. #..#. #...#",
	'L': "#.... #.... #.... #.... #.... #.... #####",
	'M': "#...# ##.## #.#.# #.#.# #...# #...# #...#",
	'N': "#...# #...# ##..# #.#.# #..## #...# #...#",
	'O': ".###. #...# #...# #...# #...# #...# .###.",
	'P': "####. #...# #...# ####. #.... #.... #....",
	'Q': ".###. #...# #...# #...# #.#.# #..#. .##.#",
	'R': "####. #...# #...# ####. #.#.. #..#. #...#",
	'S': ".#### #.... #.... .###. ....# ....# ####.",
	'T': "##### ..#.. ..#.. ..#.. ..#.. ..#.. ..#..",
	'U': "#...# #...# #...# #...# #...# #...# .###.",
	'V': "#...# #...# #...# #...# #...# .#.#. ..#..",
	'W': "#...# #...# #...# #.#.# #.#.# #.#.# .#.#.",
	'X': "#...# #...# .#.#. ..#.. .#.#. #...# #...#",
	'Y': "#...# #...# .#.#. ..#.. ..#.. ..#.. ..#..",
	'Z': "##### ....# ...#. ..#.. .#... #.... #####",
	'a': "..... ..... .###. ....# .#### #...# .####",
	'b': "#.... #.... #.##. ##..# #...# #...# ####.",
	'c': "..... ..... .###. #.... #.... #...# .###.",
	'd': "....# ....# .##.# #..## #...# #...# .####",
	'e': "..... ..... .###. #...# ##### #.... .###.",
	'f': "..##. .#..# .#... ###.. .#... .#... .#...",
	'g': "..... ..... .#### #...# #...# #...# .#### ....# .###.",
	'h': "#.... #.... #.##. ##..# #...# #...# #...#",
	'i': "..#.. ..... .##.. ..#.. ..#.. ..#.. .###.",
	'j': "...#. ..... ..##. ...#. ...#. ...#. ...#. #..#. .##..",
	'k': "#.... #.... #..#. #.#.. ##... #.#.. #..#.",
	'l': ".##.. ..#.. ..#.. ..#.. ..#.. ..#.. .###.",
	'm': "..... ..... ##.#. #.#.# #.#.# #...# #...#",
	'n': "..... ..... #.##. ##..# #...# #...# #...#",
	'o': "..... ..... .###. #...# #...# #...# .###.",
	'p': "..... ..... ####. #...# #...# #...# ####. #.... #....",
	'q': "..... ..... .#### #...# #...# #...# .#### ....# ....#",
	'r': "..... ..... #.##. ##..# #.... #.... #....",
	's': "..... ..... .###. #.... .###. ....# ####.",
	't': ".#... .#... ###.. .#... .#... .#..# ..##.",
	'u': "..... ..... #...# #...# #...# #..## .##.#",
	'v': "..... ..... #...# #...# #...# .#.#. ..#..",
	'w': "..... ..... #...# #...# #.#.# #.#.# .#.#.",
	'x': "..... ..... #...# .#.#. ..#.. .#.#. #...#",
	'y': "..... ..... #...# #...# #...# #...# .#### ....# .###.",
	'z': "..... ..... ##### ...#. ..#.. .#... #####",
	'µ': "..... ..... #...# #...# #...# #..## ###.# #.... #....",
	'.': "..... ..... ..... ..... ..... .##.. .##..",
	',': "..... ..... ..... ..... ..... .##.. .##.. ..#.. .#...",
	':': "..... .##.. .##.. ..... .##.. .##.. .....",
	';': "..... .##.. .##.. ..... ..... .##.. .##.. ..#.. .#...",
	'-': "..... ..... ..... ##### ..... ..... .....",
	'+': "..... ..#.. ..#.. ##### ..#.. ..#.. .....",
	'=': "..... ..... ##### ..... ##### ..... .....",
	'/': "..... ....# ...#. ..#.. .#... #.... .....",
	'(': "...#. ..#.. .#... .#... .#... ..#.. ...#.",
	')': ".#... ..#.. ...#. ...#. ...#. ..#.. .#...",
	'%': "##... ##..# ...#. ..#.. .#... #..## ...##",
	'>': ".#... ..#.. ...#. ....# ...#. ..#.. .#...",
	'<': "...#. ..#.. .#... #.... .#... ..#.. ...#.",
	'→': "..... ..#.. ...#. ##### ...#. ..#.. .....",
	'×': "..... #...# .#.#. ..#.. .#.#. #...# .....",
	'?': ".###. #...# ....# ...#. ..#.. ..... ..#..",
}
