//! The tokens of the policy language.
//!
//! Whitespace (newlines included) separates tokens; `#` starts a comment that runs to the end
//! of the line. A word is a run of ASCII letters, digits, `_`, `.` and `-` that starts with a
//! letter, a digit or `_`: keywords, names, metrics, numbers, durations and addresses are all
//! words, told apart by the parser from where they stand. The other tokens are `{ } ( )` and
//! the comparison operators; any other character is a token of its own that no rule accepts.

use crate::policy::{CmpOp, Pos};

/// What a token is.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Tok<'a> {
    Word(&'a str),
    LBrace,
    RBrace,
    LParen,
    RParen,
    Op(CmpOp),
    Other(char),
    Eof,
}

/// A token, its byte span in the source and where it starts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub tok: Tok<'a>,
    pub start: usize,
    pub end: usize,
    pub pos: Pos,
}

impl Token<'_> {
    /// How an error message names it: quoted text, or `end of file`.
    pub fn describe(&self) -> String {
        match self.tok {
            Tok::Word(w) => format!("{w:?}"),
            Tok::LBrace => "\"{\"".into(),
            Tok::RBrace => "\"}\"".into(),
            Tok::LParen => "\"(\"".into(),
            Tok::RParen => "\")\"".into(),
            Tok::Op(op) => format!("{:?}", op.as_str()),
            Tok::Other(c) => format!("{:?}", c.to_string()),
            Tok::Eof => "end of file".into(),
        }
    }
}

fn word_start(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// The tokens of `src`, ending with exactly one [`Tok::Eof`].
pub(crate) fn lex(src: &str) -> Vec<Token<'_>> {
    let mut out = Vec::new();
    let mut it = src.char_indices().peekable();
    let (mut line, mut col) = (1u32, 1u32);
    while let Some(&(i, c)) = it.peek() {
        if c == '\n' {
            line = line.saturating_add(1);
            col = 1;
            it.next();
            continue;
        }
        if c.is_whitespace() {
            col = col.saturating_add(1);
            it.next();
            continue;
        }
        if c == '#' {
            while it.next_if(|&(_, c)| c != '\n').is_some() {}
            continue;
        }
        let pos = Pos { line, col };
        it.next();
        col = col.saturating_add(1);
        let mut end = i + c.len_utf8();
        let tok = if word_start(c) {
            while let Some((j, d)) = it.next_if(|&(_, d)| word_char(d)) {
                end = j + d.len_utf8();
                col = col.saturating_add(1);
            }
            Tok::Word(&src[i..end])
        } else {
            let next_is_eq = it.peek().is_some_and(|&(_, d)| d == '=');
            let two = |op| (op, true);
            let (tok, pair) = match c {
                '{' => (Tok::LBrace, false),
                '}' => (Tok::RBrace, false),
                '(' => (Tok::LParen, false),
                ')' => (Tok::RParen, false),
                '<' if next_is_eq => two(Tok::Op(CmpOp::Le)),
                '<' => (Tok::Op(CmpOp::Lt), false),
                '>' if next_is_eq => two(Tok::Op(CmpOp::Ge)),
                '>' => (Tok::Op(CmpOp::Gt), false),
                '=' if next_is_eq => two(Tok::Op(CmpOp::Eq)),
                '!' if next_is_eq => two(Tok::Op(CmpOp::Ne)),
                other => (Tok::Other(other), false),
            };
            if pair {
                it.next();
                end += 1;
                col = col.saturating_add(1);
            }
            tok
        };
        out.push(Token {
            tok,
            start: i,
            end,
            pos,
        });
    }
    out.push(Token {
        tok: Tok::Eof,
        start: src.len(),
        end: src.len(),
        pos: Pos { line, col },
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(src: &str) -> Vec<Tok<'_>> {
        lex(src).into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn words_operators_and_comments() {
        assert_eq!(
            kinds("mem.used_pct<=30 # note\n( ) {}!= == @ ="),
            vec![
                Tok::Word("mem.used_pct"),
                Tok::Op(CmpOp::Le),
                Tok::Word("30"),
                Tok::LParen,
                Tok::RParen,
                Tok::LBrace,
                Tok::RBrace,
                Tok::Op(CmpOp::Ne),
                Tok::Op(CmpOp::Eq),
                Tok::Other('@'),
                Tok::Other('='),
                Tok::Eof,
            ]
        );
        assert_eq!(
            kinds("10.255.0.10 10s r-1"),
            vec![Tok::Word("10.255.0.10"), Tok::Word("10s"), Tok::Word("r-1"), Tok::Eof]
        );
    }

    #[test]
    fn positions_are_one_based_characters() {
        let t = lex("a\n  bé c\r\n\td");
        let pos: Vec<(u32, u32)> = t.iter().map(|t| (t.pos.line, t.pos.col)).collect();
        // "bé" is the word "b" then the character 'é'.
        assert_eq!(pos, vec![(1, 1), (2, 3), (2, 4), (2, 6), (3, 2), (3, 3)]);
        assert_eq!(t[2].describe(), "\"é\"");
        assert_eq!(t.last().map(|t| t.describe()), Some("end of file".to_string()));
    }
}
