//! Identifier quoting: the one helper every generated statement uses. Values are never
//! formatted into SQL; they travel as bind parameters or are quoted by the server
//! (`format('%L')`) — except by [`literal`], for the few utility statements that take no
//! parameters and whose value must not travel in a second, loggable statement.

/// Quotes an identifier for SQL, always, doubling embedded double quotes.
pub fn quote(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// A string literal, for a utility statement that takes no bind parameters (`CREATE
/// SUBSCRIPTION … CONNECTION`, `CREATE ROLE … PASSWORD`) when the value should not be sent in
/// a `format()` query first. Every barge session has `standard_conforming_strings` on, so
/// only the quote is doubled.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// A schema-qualified, quoted name: `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote(schema), quote(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_and_doubles_quotes() {
        assert_eq!(quote("plain"), "\"plain\"");
        assert_eq!(quote("Odd \"Name\".x"), "\"Odd \"\"Name\"\".x\"");
        assert_eq!(qualified("a b", "C"), "\"a b\".\"C\"");
        assert_eq!(literal("it's \\n"), "'it''s \\n'");
    }
}
