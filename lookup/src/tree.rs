//! A trace's lines as a tree by span: `parent_span_id` → `span_id`.

use std::collections::HashMap;

use serde::Serialize;

use crate::Line;

/// A line with its place in the tree.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TreeLine {
    /// 0 for a root (the edge line, or a line whose parent is missing).
    pub depth: usize,
    /// `parent_span_id` is set but no line of the trace has that span id
    /// (e.g. the parent's log line was lost or rejected).
    pub orphan: bool,
    pub ts: String,
    #[serde(flatten)]
    pub line: Line,
}

/// Orders `lines` depth-first: every parent before its children, roots and
/// siblings by (time, span id). Roots are lines without a parent, or whose
/// parent is not among `lines` (`orphan`). A span id used by several lines
/// parents their children under the first of them; lines caught in a cycle
/// are listed last, as roots.
pub fn span_tree(mut lines: Vec<Line>) -> Vec<TreeLine> {
    lines.sort_by(|a, b| (a.ts_ms, &a.span_id).cmp(&(b.ts_ms, &b.span_id)));
    let mut first_with_span: HashMap<&str, usize> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        first_with_span.entry(l.span_id.as_str()).or_insert(i);
    }
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); lines.len()];
    let mut roots = Vec::new();
    let mut orphan = vec![false; lines.len()];
    for (i, l) in lines.iter().enumerate() {
        let parent = (!l.parent_span_id.is_empty())
            .then(|| first_with_span.get(l.parent_span_id.as_str()).copied())
            .flatten()
            .filter(|&p| p != i);
        match parent {
            Some(p) => children[p].push(i),
            None => {
                orphan[i] = !l.parent_span_id.is_empty()
                    && !first_with_span.contains_key(l.parent_span_id.as_str());
                roots.push(i);
            }
        }
    }
    // `lines` is sorted, so every child list is in (time, span id) order.
    let mut order: Vec<(usize, usize)> = Vec::with_capacity(lines.len());
    let mut seen = vec![false; lines.len()];
    for &r in &roots {
        walk(r, &children, &mut order, &mut seen);
    }
    for i in 0..lines.len() {
        if !seen[i] {
            walk(i, &children, &mut order, &mut seen);
        }
    }
    let mut slots: Vec<Option<Line>> = lines.into_iter().map(Some).collect();
    order
        .into_iter()
        .map(|(i, depth)| {
            let line = slots[i].take().expect("each line is visited once");
            TreeLine {
                depth,
                orphan: orphan[i],
                ts: crate::fmt_ms(line.ts_ms),
                line,
            }
        })
        .collect()
}

/// Depth-first from `start`, appending (line, depth) in pre-order.
fn walk(start: usize, children: &[Vec<usize>], order: &mut Vec<(usize, usize)>, seen: &mut [bool]) {
    let mut stack = vec![(start, 0usize)];
    while let Some((i, depth)) = stack.pop() {
        if seen[i] {
            continue;
        }
        seen[i] = true;
        order.push((i, depth));
        for &c in children[i].iter().rev() {
            stack.push((c, depth + 1));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ts: u64, span: &str, parent: &str) -> Line {
        Line {
            ts_ms: ts,
            trace_id: "t".into(),
            span_id: span.into(),
            parent_span_id: parent.into(),
            service: format!("svc-{span}"),
            caller: String::new(),
            api: "/x".into(),
            uid: 1,
            psid: 2,
            status: 200,
            latency_ms: 1.0,
            host: "h".into(),
            idc: "yf".into(),
            continuation: String::new(),
        }
    }

    fn shape(t: &[TreeLine]) -> Vec<(String, usize, bool)> {
        t.iter()
            .map(|l| (l.line.span_id.clone(), l.depth, l.orphan))
            .collect()
    }

    #[test]
    fn parents_come_before_children_siblings_by_time() {
        // Shuffled input; b2 starts before b1.
        let t = span_tree(vec![
            line(30, "c", "b1"),
            line(20, "b1", "a"),
            line(10, "a", ""),
            line(15, "b2", "a"),
            line(40, "d", "b2"),
        ]);
        assert_eq!(
            shape(&t),
            vec![
                ("a".into(), 0, false),
                ("b2".into(), 1, false),
                ("d".into(), 2, false),
                ("b1".into(), 1, false),
                ("c".into(), 2, false),
            ]
        );
    }

    #[test]
    fn missing_parents_and_cycles_still_list_every_line() {
        let t = span_tree(vec![
            line(10, "a", ""),
            line(20, "x", "lost"),
            line(30, "y", "x"),
            line(40, "p", "q"),
            line(50, "q", "p"),
            line(60, "s", "s"),
        ]);
        assert_eq!(t.len(), 6);
        assert_eq!(
            shape(&t)[..3],
            [
                ("a".into(), 0, false),
                ("x".into(), 0, true),
                ("y".into(), 1, false)
            ]
        );
        let rest: Vec<String> = t[3..].iter().map(|l| l.line.span_id.clone()).collect();
        assert_eq!(rest, ["s", "p", "q"]);
    }
}
