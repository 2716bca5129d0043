//! The activity chart: the report's timeline as an inline SVG bar chart (writes and failures
//! per bucket), drawn with nothing but SVG elements, so the page needs no script and prints.

use std::fmt::{self, Write};

use super::html::Esc;
use super::Timeline;

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 260.0;
const LEFT: f64 = 48.0;
const RIGHT: f64 = 12.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 44.0;
/// At most this many labels under the axis.
const MAX_LABELS: usize = 12;

/// The smallest of 1, 2, 5 × 10^k at least `n`: the top of the y axis.
fn nice_ceiling(n: u64) -> u64 {
    let mut scale = 1;
    loop {
        for step in [1, 2, 5] {
            if step * scale >= n {
                return step * scale;
            }
        }
        scale *= 10;
    }
}

/// What a bucket is called under the axis: its time of day for minutes and hours, its date
/// for days and weeks (`start` is `2026-11-22T09:00:00Z`).
fn label<'a>(bucket: &str, start: &'a str) -> &'a str {
    let range = if bucket == "minute" || bucket == "hour" {
        11..16
    } else {
        5..10
    };
    start.get(range).unwrap_or(start)
}

/// Writes the chart as one `<svg>` element.
pub(super) fn svg(timeline: &Timeline, out: &mut String) -> fmt::Result {
    let buckets = &timeline.buckets;
    let writes: u64 = buckets.iter().map(|b| b.writes).sum();
    let failures: u64 = buckets.iter().map(|b| b.failures).sum();
    write!(
        out,
        r#"<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="Writes and failures per {bucket}: {writes} writes, {failures} failures">"#,
        bucket = Esc(timeline.bucket),
    )?;
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let bottom = TOP + plot_height;
    if buckets.is_empty() {
        write!(
            out,
            r#"<text x="{x}" y="{y}" text-anchor="middle" class="axis">No events in this period.</text></svg>"#,
            x = WIDTH / 2.0,
            y = HEIGHT / 2.0
        )?;
        return Ok(());
    }
    let top = nice_ceiling(
        buckets
            .iter()
            .map(|b| b.writes.max(b.failures))
            .max()
            .unwrap_or(0)
            .max(1),
    );
    // Grid lines and their counts: 0, half, top.
    for (i, value) in [0, top / 2, top].into_iter().enumerate() {
        if i == 1 && top < 2 {
            continue;
        }
        let y = bottom - plot_height * value as f64 / top as f64;
        write!(
            out,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{x2}" y2="{y:.1}" class="grid"/><text x="{tx}" y="{ty:.1}" text-anchor="end" class="axis">{value}</text>"#,
            x2 = WIDTH - RIGHT,
            tx = LEFT - 6.0,
            ty = y + 4.0
        )?;
    }
    let slot = plot_width / buckets.len() as f64;
    let bar = (slot * 0.38).clamp(1.0, 28.0);
    let label_every = buckets.len().div_ceil(MAX_LABELS);
    for (i, bucket) in buckets.iter().enumerate() {
        let x = LEFT + slot * i as f64 + slot / 2.0;
        for (value, class, offset, what) in [
            (bucket.writes, "writes", -bar, "writes"),
            (bucket.failures, "failures", 0.0, "failures"),
        ] {
            if value == 0 {
                continue;
            }
            let h = plot_height * value as f64 / top as f64;
            write!(
                out,
                r#"<rect x="{bx:.1}" y="{by:.1}" width="{bar:.1}" height="{h:.1}" class="{class}"><title>{start}: {value} {what}</title></rect>"#,
                bx = x + offset,
                by = bottom - h,
                start = Esc(&bucket.start),
            )?;
        }
        if i % label_every == 0 {
            write!(
                out,
                r#"<text x="{x:.1}" y="{y}" text-anchor="middle" class="axis">{text}</text>"#,
                y = bottom + 16.0,
                text = Esc(label(timeline.bucket, &bucket.start)),
            )?;
        }
    }
    let first = &buckets[0].start;
    write!(
        out,
        r#"<line x1="{LEFT}" y1="{bottom}" x2="{x2}" y2="{bottom}" class="axisline"/><text x="{LEFT}" y="{y}" class="axis">UTC, one bar pair per {bucket}, from {first}</text>"#,
        x2 = WIDTH - RIGHT,
        y = HEIGHT - 6.0,
        bucket = Esc(timeline.bucket),
        first = Esc(first),
    )?;
    // The legend, top right.
    let lx = WIDTH - RIGHT - 190.0;
    write!(
        out,
        r#"<rect x="{lx}" y="6" width="12" height="12" class="writes"/><text x="{t1}" y="16" class="axis">writes ({writes})</text><rect x="{l2}" y="6" width="12" height="12" class="failures"/><text x="{t2}" y="16" class="axis">failures ({failures})</text></svg>"#,
        t1 = lx + 16.0,
        l2 = lx + 100.0,
        t2 = lx + 116.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_axis_tops_at_a_round_number() {
        assert_eq!(
            [0, 1, 2, 3, 6, 11, 49, 51, 1000, 1001].map(nice_ceiling),
            [1, 1, 2, 5, 10, 20, 50, 100, 1000, 2000]
        );
    }

    #[test]
    fn labels_are_times_for_hours_and_dates_for_days() {
        assert_eq!(label("hour", "2026-11-22T09:00:00Z"), "09:00");
        assert_eq!(label("day", "2026-11-22T00:00:00Z"), "11-22");
    }
}
