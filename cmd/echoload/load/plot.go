package load

import (
	"fmt"
	"image/color"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

var (
	colorP99    = color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	colorMax    = color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}
	colorReload = color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	colorFailed = color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	colorPend   = color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
	// colorSpan shades a reload in progress, translucent.
	colorSpan = color.NRGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0x30}
)

// CheckPlotPath reports whether path has an extension WritePlot supports.
func CheckPlotPath(path string) error {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".png", ".svg", ".pdf":
		return nil
	}
	return fmt.Errorf("plot file %q: extension must be .png, .svg or .pdf", path)
}

// WritePlot draws RTT latency over time (p99 and max per timeline bucket),
// marks each reload with a vertical line (red if it failed, grey if still
// pending when the run ended), shades each completed one from its start to
// its end, and marks each bucket
// with failures with a red cross on the time axis, and saves it to path; the
// format follows the extension (.png, .svg or .pdf).
func (rep *Report) WritePlot(path string) error {
	if err := CheckPlotPath(path); err != nil {
		return err
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("echoload %s: RTT per %gms bucket", rep.Config.Addr, rep.Timeline.BucketMS)
	p.X.Label.Text = "time since start (s)"
	p.Y.Label.Text = "RTT (ms)"
	p.Add(plotter.NewGrid())
	p.Legend.Top = true

	pts := rep.Timeline.Points
	half := rep.Timeline.BucketMS / 2000 // bucket centre offset in seconds
	ymax := 0.0
	for _, pt := range pts {
		ymax = max(ymax, pt.MaxMS)
	}
	if ymax == 0 {
		ymax = 1
	}
	ymax *= 1.05

	// Reload spans and markers first, so the latency lines are drawn over
	// them. A completed reload's span, from its start to its end (the pid
	// file naming the new process, or the command's exit), is shaded.
	var span *plotter.Polygon
	for _, ev := range rep.Reloads.Events {
		if !ev.OK || ev.DurationMS <= 0 {
			continue
		}
		x0, x1 := ev.StartMS/1000, (ev.StartMS+ev.DurationMS)/1000
		poly, err := plotter.NewPolygon(plotter.XYs{{X: x0, Y: 0}, {X: x1, Y: 0}, {X: x1, Y: ymax}, {X: x0, Y: ymax}})
		if err != nil {
			return fmt.Errorf("plot reload span: %w", err)
		}
		poly.Color = colorSpan
		poly.LineStyle.Width = 0
		p.Add(poly)
		span = poly
	}
	var okMark, failMark, pendMark *plotter.Line
	for _, ev := range rep.Reloads.Events {
		x := ev.StartMS / 1000
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: 0}, {X: x, Y: ymax}})
		if err != nil {
			return fmt.Errorf("plot reload marker: %w", err)
		}
		l.Color = colorReload
		l.Width = vg.Points(0.75)
		l.Dashes = []vg.Length{vg.Points(2), vg.Points(2)}
		switch {
		case ev.OK:
			okMark = l
		case ev.Pending:
			l.Color = colorPend
			pendMark = l
		default:
			l.Color = colorFailed
			l.Width = vg.Points(1)
			failMark = l
		}
		p.Add(l)
	}

	p99, err := segments(pts, half, func(pt TimelinePoint) float64 { return pt.P99MS }, colorP99, p)
	if err != nil {
		return err
	}
	mx, err := segments(pts, half, func(pt TimelinePoint) float64 { return pt.MaxMS }, colorMax, p)
	if err != nil {
		return err
	}
	if p99 != nil {
		p.Legend.Add("p99", p99)
	}
	if mx != nil {
		p.Legend.Add("max", mx)
	}
	if okMark != nil {
		p.Legend.Add("reload", okMark)
	}
	if span != nil {
		p.Legend.Add("reload in progress", span)
	}
	if failMark != nil {
		p.Legend.Add("failed reload", failMark)
	}
	if pendMark != nil {
		p.Legend.Add("pending reload", pendMark)
	}

	var fails plotter.XYs
	for _, pt := range pts {
		if pt.Failures > 0 {
			fails = append(fails, plotter.XY{X: pt.StartMS/1000 + half, Y: 0})
		}
	}
	if len(fails) > 0 {
		s, err := plotter.NewScatter(fails)
		if err != nil {
			return fmt.Errorf("plot failures: %w", err)
		}
		s.GlyphStyle = draw.GlyphStyle{Color: colorFailed, Radius: vg.Points(4), Shape: draw.CrossGlyph{}}
		p.Add(s)
		p.Legend.Add("failures", s)
	}

	p.Y.Min, p.Y.Max = 0, ymax
	p.X.Min = 0
	if rep.ElapsedSeconds > 0 {
		p.X.Max = rep.ElapsedSeconds
	}
	if err := p.Save(24*vg.Centimeter, 12*vg.Centimeter, path); err != nil {
		return fmt.Errorf("save plot: %w", err)
	}
	return nil
}

// segments adds one line per run of consecutive non-empty buckets (so gaps
// without samples are not bridged) and returns one of them for the legend.
func segments(pts []TimelinePoint, half float64, y func(TimelinePoint) float64, c color.Color, p *plot.Plot) (*plotter.Line, error) {
	var last *plotter.Line
	var cur plotter.XYs
	flush := func() error {
		if len(cur) == 0 {
			return nil
		}
		l, err := plotter.NewLine(cur)
		if err != nil {
			return fmt.Errorf("plot latency line: %w", err)
		}
		l.Color = c
		l.Width = vg.Points(1)
		p.Add(l)
		last = l
		cur = nil
		return nil
	}
	for _, pt := range pts {
		if pt.Count == 0 {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		cur = append(cur, plotter.XY{X: pt.StartMS/1000 + half, Y: y(pt)})
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return last, nil
}
