//! The target database itself, made from the source's catalog under the target's name: its
//! `CREATE DATABASE` (encoding, locale provider, collation, tablespace), then owner, comment,
//! grants and security labels, and at the end of the copy the settings (`ALTER DATABASE … SET`,
//! `ALTER ROLE … IN DATABASE … SET`), connection limit and template flag — settings such as
//! `default_transaction_read_only` would otherwise apply to barge's own sessions. Every name
//! and value is quoted by the server (`format('%I', …)`, `format('%L', …)`); no statement is
//! rewritten from pg_dump's text.

use crate::{db::Db, error::Result, pgtools::LeaveOut};

/// The statements that make and finish one target database.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct DatabaseSql {
    /// `CREATE DATABASE`, run on a maintenance database.
    pub create: String,
    /// Owner, comment, grants, security labels: run in the new database with pre-data.
    pub properties: Vec<String>,
    /// Settings, connection limit, template flag: run when the copy is complete.
    pub finish: Vec<String>,
}

/// Parameters whose values are lists of quoted names (pg_dump quotes each element alone).
const LIST_QUOTE: &[&str] = &[
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// Reads the source database `source_db` (on `source`) and quotes the statements for
/// `target_name` with the target server (`target`), which must understand them.
pub(crate) async fn statements(
    source: &Db,
    target: &Db,
    target_name: &str,
    leave_out: LeaveOut,
) -> Result<DatabaseSql> {
    let v = source.version_num();
    let locale = if v >= 170000 {
        "d.datlocale"
    } else if v >= 150000 {
        "d.daticulocale"
    } else {
        "null::text"
    };
    let provider = if v >= 150000 { "d.datlocprovider::text" } else { "'c'" };
    let rules = if v >= 160000 { "d.daticurules" } else { "null::text" };
    let row = source
        .query_one(
            "read the source database's properties",
            &format!(
                "select pg_catalog.pg_encoding_to_char(d.encoding)::text as encoding, d.datcollate::text as collate, \
                 d.datctype::text as ctype, {provider} as provider, {locale}::text as locale, {rules}::text as rules, \
                 case when t.spcname <> 'pg_default' then t.spcname::text end as tablespace, \
                 pg_catalog.pg_get_userbyid(d.datdba)::text as owner, d.datconnlimit, d.datistemplate, \
                 pg_catalog.shobj_description(d.oid, 'pg_database') as comment, d.datacl is not null as has_acl \
                 from pg_catalog.pg_database d join pg_catalog.pg_tablespace t on t.oid = d.dattablespace \
                 where d.datname = pg_catalog.current_database()"
            ),
            &[],
        )
        .await?;
    let quote = Quoter { db: target, name: target_name };
    let mut create = quote
        .format(
            "CREATE DATABASE %I WITH TEMPLATE = template0 ENCODING = %L LC_COLLATE = %L LC_CTYPE = %L",
            &[row.get("encoding"), row.get("collate"), row.get("ctype")],
        )
        .await?;
    let provider: String = row.get("provider");
    let locale: Option<String> = row.get("locale");
    match (provider.as_str(), &locale) {
        ("i", Some(locale)) => {
            create +=
                &quote.format_plain(" LOCALE_PROVIDER = icu ICU_LOCALE = %L", std::slice::from_ref(locale)).await?;
        }
        ("b", Some(locale)) => {
            create += &quote
                .format_plain(" LOCALE_PROVIDER = builtin BUILTIN_LOCALE = %L", std::slice::from_ref(locale))
                .await?;
        }
        _ => {}
    }
    if let Some(rules) = row.get::<_, Option<String>>("rules") {
        create += &quote.format_plain(" ICU_RULES = %L", &[rules]).await?;
    }
    if let (Some(space), false) = (row.get::<_, Option<String>>("tablespace"), leave_out.tablespaces) {
        create += &quote.format_plain(" TABLESPACE = %I", &[space]).await?;
    }
    let mut properties = Vec::new();
    if !leave_out.owner {
        properties.push(quote.format("ALTER DATABASE %I OWNER TO %I", &[row.get("owner")]).await?);
    }
    if let Some(comment) = row.get::<_, Option<String>>("comment") {
        properties.push(quote.format("COMMENT ON DATABASE %I IS %L", &[comment]).await?);
    }
    if !leave_out.acl && row.get::<_, bool>("has_acl") {
        // PUBLIC's default CONNECT and TEMPORARY go unless the source grants them again.
        properties.push(quote.format("REVOKE ALL ON DATABASE %I FROM PUBLIC", &[]).await?);
        let grants = source
            .query(
                "read the source database's grants",
                "select a.privilege_type::text, case when a.grantee = 0 then null else pg_catalog.pg_get_userbyid(a.grantee)::text end, a.is_grantable \
                 from pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a \
                 where d.datname = pg_catalog.current_database() and a.grantee <> d.datdba order by 2 nulls first, 1",
                &[],
            )
            .await?;
        for grant in grants {
            let (privilege, grantee, grantable): (String, Option<String>, bool) =
                (grant.get(0), grant.get(1), grant.get(2));
            let option = if grantable { " WITH GRANT OPTION" } else { "" };
            let sql = match grantee {
                Some(role) => {
                    let template = format!("GRANT %s ON DATABASE %I TO %I{option}");
                    quote.format_plain(&template, &[privilege, target_name.to_owned(), role]).await?
                }
                None => {
                    quote
                        .format_plain("GRANT %s ON DATABASE %I TO PUBLIC", &[privilege, target_name.to_owned()])
                        .await?
                }
            };
            properties.push(sql);
        }
    }
    let labels = source
        .query(
            "read the source database's security labels",
            "select l.provider, l.label from pg_catalog.pg_shseclabel l join pg_catalog.pg_database d on d.oid = l.objoid \
             where l.classoid = 'pg_catalog.pg_database'::pg_catalog.regclass and d.datname = pg_catalog.current_database() order by 1",
            &[],
        )
        .await?;
    for label in labels {
        properties
            .push(quote.format("SECURITY LABEL FOR %I ON DATABASE %I IS %L", &[label.get(0), label.get(1)]).await?);
    }
    let mut finish = Vec::new();
    let settings = source
        .query(
            "read the source database's settings",
            "select case when s.setrole = 0 then null else pg_catalog.pg_get_userbyid(s.setrole)::text end, s.setconfig \
             from pg_catalog.pg_db_role_setting s join pg_catalog.pg_database d on d.oid = s.setdatabase \
             where d.datname = pg_catalog.current_database() order by 1 nulls first",
            &[],
        )
        .await?;
    for row in settings {
        let (role, config): (Option<String>, Vec<String>) = (row.get(0), row.get(1));
        for item in config {
            let Some((name, value)) = item.split_once('=') else { continue };
            let values = if LIST_QUOTE.contains(&name.to_ascii_lowercase().as_str()) {
                split_guc_list(value)
            } else {
                vec![value.to_owned()]
            };
            let placeholders = if values.is_empty() { "''".to_owned() } else { vec!["%L"; values.len()].join(", ") };
            let sql = match &role {
                None => {
                    let mut args = vec![name.to_owned()];
                    args.extend(values);
                    quote.format(&format!("ALTER DATABASE %I SET %I TO {placeholders}"), &args).await?
                }
                Some(role) => {
                    let template = format!("ALTER ROLE %I IN DATABASE %I SET %I TO {placeholders}");
                    let mut args = vec![role.clone(), target_name.to_owned(), name.to_owned()];
                    args.extend(values);
                    quote.format_plain(&template, &args).await?
                }
            };
            finish.push(sql);
        }
    }
    let limit: i32 = row.get("datconnlimit");
    if limit != -1 {
        finish.push(quote.format(&format!("ALTER DATABASE %I CONNECTION LIMIT = {limit}"), &[]).await?);
    }
    if row.get::<_, bool>("datistemplate") {
        finish.push(quote.format("ALTER DATABASE %I IS_TEMPLATE = true", &[]).await?);
    }
    Ok(DatabaseSql { create, properties, finish })
}

/// Quotes through the target server's `format()`.
struct Quoter<'a> {
    db: &'a Db,
    /// The target database's name, the first `%I` of [`Quoter::format`].
    name: &'a str,
}

impl Quoter<'_> {
    /// `format(template, name, args…)`.
    async fn format(&self, template: &str, args: &[String]) -> Result<String> {
        let mut all = vec![self.name.to_owned()];
        all.extend_from_slice(args);
        self.format_plain(template, &all).await
    }

    /// `format(template, args…)`.
    async fn format_plain(&self, template: &str, args: &[String]) -> Result<String> {
        let row = self
            .db
            .query_one("quote a statement", "select pg_catalog.format($1, variadic $2::text[])", &[&template, &args])
            .await?;
        Ok(row.get(0))
    }
}

/// Splits a list parameter's stored value into its elements, as the server wrote it:
/// comma-separated, each either a double-quoted name (`""` for a quote) or a bare word.
fn split_guc_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = value.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut item = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                if c == '"' {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        item.push('"');
                    } else {
                        break;
                    }
                } else {
                    item.push(c);
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                item.push(c);
                chars.next();
            }
        }
        out.push(item);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some(',') {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_list_settings_like_the_server_writes_them() {
        assert_eq!(split_guc_list("\"$user\", public"), ["$user", "public"]);
        assert_eq!(split_guc_list("a,\"b, \"\"c\"\"\" , D"), ["a", "b, \"c\"", "D"]);
        assert_eq!(split_guc_list("\"x\ny'; drop\""), ["x\ny'; drop"]);
        assert!(split_guc_list("  ").is_empty());
    }
}
