//! Syntax errors in words. The CEL parser reports what its grammar expected (`extraneous input
//! '>' expecting {'[', '{', ...}`); a person writing a rule wants to hear what they did wrong
//! and how to fix it. When a condition does not parse, [`explain`] looks at its text for the
//! common mistakes (`=` for `==`, `and` for `&&`, an unbalanced bracket, an unterminated
//! string, an operator with nothing on one side) and says so in one sentence, at the column of
//! the mistake. Anything else keeps the parser's own message.

/// One token of a condition's text, as far as this check needs: where it starts (in
/// characters) and what it is.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open(char),
    Close(char),
    /// A binary operator: `==`, `&&`, `<`, `+`, a lone `=`...
    Op(String),
    /// `!` or a unary `-` cannot be told from binary `-` here: `-` is an `Op`.
    Not,
    Word(String),
    /// A number, string or anything else that is an operand.
    Operand,
    /// `.`, `,`, `:` and `?`.
    Punct(char),
}

/// Why the text could not be cut into tokens.
enum Lexed {
    Tokens(Vec<(usize, Token)>),
    /// A string literal that never ends, opened at this character offset with this quote.
    Unterminated(usize, String),
}

fn lex(source: &str) -> Lexed {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // String literals, with an optional raw or bytes prefix.
        let prefixed = matches!(c, 'r' | 'R' | 'b' | 'B')
            && chars.get(i + 1).is_some_and(|q| *q == '"' || *q == '\'');
        if c == '"' || c == '\'' || prefixed {
            let raw = matches!(c, 'r' | 'R');
            let q = if prefixed { i + 1 } else { i };
            let quote = chars[q];
            let triple = chars.get(q + 1) == Some(&quote) && chars.get(q + 2) == Some(&quote);
            let delim: String = if triple {
                [quote; 3].iter().collect()
            } else {
                quote.to_string()
            };
            let mut j = q + delim.chars().count();
            let mut closed = false;
            while j < chars.len() {
                if chars[j] == '\\' && !raw {
                    j += 2;
                    continue;
                }
                if !triple && chars[j] == '\n' {
                    break;
                }
                if chars[j..].starts_with(&delim.chars().collect::<Vec<_>>()) {
                    j += delim.chars().count();
                    closed = true;
                    break;
                }
                j += 1;
            }
            if !closed {
                return Lexed::Unterminated(start, delim);
            }
            out.push((start, Token::Operand));
            i = j;
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push((start, Token::Operand));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((start, Token::Word(chars[start..i].iter().collect())));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let token = match two.as_str() {
            "==" | "!=" | "<=" | ">=" | "&&" | "||" => {
                i += 2;
                Token::Op(two)
            }
            _ => {
                i += 1;
                match c {
                    '(' | '[' | '{' => Token::Open(c),
                    ')' | ']' | '}' => Token::Close(c),
                    '!' => Token::Not,
                    '<' | '>' | '+' | '-' | '*' | '/' | '%' | '=' | '&' | '|' => {
                        Token::Op(c.to_string())
                    }
                    '.' | ',' | ':' | '?' => Token::Punct(c),
                    _ => Token::Operand,
                }
            }
        };
        out.push((start, token));
    }
    Lexed::Tokens(out)
}

/// The common mistake that keeps `source` from parsing, if it is one of them: the character
/// offset to report and the sentence that says what is wrong and how to fix it.
pub(super) fn explain(source: &str) -> Option<(usize, String)> {
    let tokens = match lex(source) {
        Lexed::Unterminated(at, quote) => {
            return Some((
                at,
                format!("this string is never closed; end it with {quote}"),
            ))
        }
        Lexed::Tokens(t) => t,
    };
    // Words and single characters other languages use (a field named `or` is no mistake).
    for (k, (at, t)) in tokens.iter().enumerate() {
        let after_dot = k > 0 && tokens[k - 1].1 == Token::Punct('.');
        let fix = match t {
            Token::Word(_) if after_dot => continue,
            Token::Word(w) => match w.as_str() {
                "and" | "AND" => "`and` is not CEL: write `&&`",
                "or" | "OR" => "`or` is not CEL: write `||`",
                "not" | "NOT" => "`not` is not CEL: write `!` before the condition",
                _ => continue,
            },
            Token::Op(o) if o == "=" => "`=` does not compare in CEL: write `==`",
            Token::Op(o) if o == "&" => "`&` is not CEL: write `&&` for \"and\"",
            Token::Op(o) if o == "|" => "`|` is not CEL: write `||` for \"or\"",
            _ => continue,
        };
        return Some((*at, fix.to_owned()));
    }
    // Brackets.
    let mut open: Vec<(usize, char)> = Vec::new();
    for (at, t) in &tokens {
        match t {
            Token::Open(c) => open.push((*at, *c)),
            Token::Close(c) => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match open.pop() {
                    Some((_, o)) if o == want => {}
                    Some((o_at, o)) => {
                        return Some((
                            *at,
                            format!(
                            "`{c}` closes the `{o}` opened at column {}; close it with `{}` first",
                            o_at + 1,
                            closing(o)
                        ),
                        ))
                    }
                    None => {
                        return Some((
                            *at,
                            format!(
                                "`{c}` closes nothing: remove it, or add the `{want}` it closes"
                            ),
                        ))
                    }
                }
            }
            _ => {}
        }
    }
    if let Some((at, o)) = open.pop() {
        return Some((
            at,
            format!("this `{o}` is never closed: add `{}`", closing(o)),
        ));
    }
    // Binary operators need an operand on each side.
    let is_operand_end = |t: &Token| matches!(t, Token::Word(_) | Token::Operand | Token::Close(_));
    let is_operand_start = |t: &Token| {
        matches!(
            t,
            Token::Word(_) | Token::Operand | Token::Open(_) | Token::Not
        )
    };
    for (k, (at, t)) in tokens.iter().enumerate() {
        let Token::Op(o) = t else { continue };
        let before = k.checked_sub(1).map(|p| &tokens[p].1);
        let after = tokens.get(k + 1).map(|n| &n.1);
        // `-` may be unary: it needs nothing on its left.
        let left_ok = o == "-" || before.is_some_and(is_operand_end);
        let right_ok =
            after.is_some_and(|a| is_operand_start(a) || matches!(a, Token::Op(m) if m == "-"));
        if !left_ok {
            return Some((
                *at,
                match before {
                    Some(Token::Op(p)) => format!("two operators in a row, `{p}` and `{o}`: remove one, or put a value between them"),
                    _ => format!("`{o}` has nothing on its left: put a value before it"),
                },
            ));
        }
        if !right_ok {
            return Some(match tokens.get(k + 1) {
                Some((next, Token::Op(n))) => (
                    *next,
                    format!("two operators in a row, `{o}` and `{n}`: remove one, or put a value between them"),
                ),
                _ => (
                    *at,
                    format!("`{o}` has nothing on its right: put a value after it"),
                ),
            });
        }
    }
    None
}

fn closing(open: char) -> char {
    match open {
        '(' => ')',
        '[' => ']',
        _ => '}',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column (1-based) and message of `source`'s mistake.
    fn said(source: &str) -> (usize, String) {
        let (at, message) =
            explain(source).unwrap_or_else(|| panic!("no mistake found in {source}"));
        (at + 1, message)
    }

    #[test]
    fn the_common_mistakes_are_said_in_words_at_their_column() {
        assert_eq!(
            said("action = \"transfer\""),
            (8, "`=` does not compare in CEL: write `==`".to_owned())
        );
        assert_eq!(
            said("amount > 5 and action == \"x\""),
            (12, "`and` is not CEL: write `&&`".to_owned())
        );
        assert_eq!(said("a or b").1, "`or` is not CEL: write `||`");
        assert_eq!(said("(amount > 5").0, 1);
        assert_eq!(said("(amount > 5").1, "this `(` is never closed: add `)`");
        assert_eq!(
            said("amount > 5)").1,
            "`)` closes nothing: remove it, or add the `(` it closes"
        );
        assert_eq!(
            said("action in [\"a\", \"b\")").1,
            "`)` closes the `[` opened at column 11; close it with `]` first"
        );
        assert_eq!(
            said("amount > > 5"),
            (
                10,
                "two operators in a row, `>` and `>`: remove one, or put a value between them"
                    .to_owned()
            )
        );
        assert_eq!(
            said("amount >"),
            (
                8,
                "`>` has nothing on its right: put a value after it".to_owned()
            )
        );
        assert_eq!(
            said("&& amount > 5").1,
            "`&&` has nothing on its left: put a value before it"
        );
        assert_eq!(
            said("action == \"transfer"),
            (11, "this string is never closed; end it with \"".to_owned())
        );
        assert_eq!(
            said("a == 'x").1,
            "this string is never closed; end it with '"
        );
    }

    #[test]
    fn correct_text_is_not_blamed() {
        for ok in [
            "action == \"a=b\" && amount >= 5",
            "!(amount > 5) || -amount < 3",
            "counterparty.country in lists.sanctioned",
            "r\"raw \\ string\" == 'x' && \"\"\"triple \" quote\"\"\" != ''",
            "amount > -5",
            "has(counterparty.id) ? 1 : 2",
        ] {
            assert_eq!(explain(ok), None, "{ok}");
        }
    }
}
