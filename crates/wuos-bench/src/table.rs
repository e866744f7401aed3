//! The one table printer of the benchmarks: a header, rows of text, columns as wide as their
//! widest cell; the first column is left-aligned (names), the others right-aligned (figures).

use std::fmt;

/// A table being filled; printed with `Display`.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new<S: ToString>(header: impl IntoIterator<Item = S>) -> Self {
        Self {
            header: header.into_iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells print empty, extra cells are kept (and widen the table).
    pub fn row<S: ToString>(&mut self, cells: impl IntoIterator<Item = S>) -> &mut Self {
        self.rows.push(cells.into_iter().map(|c| c.to_string()).collect());
        self
    }

    fn widths(&self) -> Vec<usize> {
        let cols = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.header.len()])
            .max()
            .unwrap_or(0);
        (0..cols)
            .map(|i| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .filter_map(|r| r.get(i))
                    .map(|c| c.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let widths = self.widths();
        for row in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = row.get(i).map_or("", String::as_str);
                if i == 0 {
                    line.push_str(&format!("{cell:<w$}"));
                } else {
                    line.push_str(&format!("  {cell:>w$}"));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_take_the_width_of_their_widest_cell() {
        let mut t = Table::new(["case", "p50 µs", "Gbit/s"]);
        t.row(["idle", "8", "15.43"]).row(["reserved", "10", "9.1"]);
        assert_eq!(
            t.to_string(),
            "case      p50 µs  Gbit/s\n\
             idle           8   15.43\n\
             reserved      10     9.1\n"
        );
    }

    #[test]
    fn short_and_long_rows_still_line_up() {
        let mut t = Table::new(["a", "b"]);
        t.row(["x"]).row(["y", "1", "extra"]);
        assert_eq!(t.to_string(), "a  b\nx\ny  1  extra\n");
    }
}
