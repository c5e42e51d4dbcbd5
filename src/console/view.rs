//! What the templates draw: the page frame, tables, forms and detail sections. Pages
//! build these from `control`'s records; the templates escape every value (a name with
//! a script in it is shown as text).

use askama::Template;

use super::session::Ctx;

/// The frame every signed-in page shares.
pub struct Layout {
    pub title: String,
    /// Which navigation entry is current.
    pub nav: &'static str,
    pub user: String,
    pub role: String,
    pub admin: bool,
    pub writer: bool,
    pub csrf: String,
    pub project_id: String,
    pub projects: Vec<(String, String)>,
    pub flash: Option<String>,
    pub error: Option<String>,
}

impl Layout {
    pub fn new(ctx: &Ctx, web: &super::Web, title: impl Into<String>, nav: &'static str) -> Self {
        let role = if ctx.admin {
            "admin"
        } else if ctx.writer {
            "member"
        } else {
            "reader"
        };
        Layout {
            title: title.into(),
            nav,
            user: ctx.user_name.clone(),
            role: role.into(),
            admin: ctx.admin,
            writer: ctx.writer,
            csrf: ctx.csrf.clone(),
            project_id: ctx.project_id.clone(),
            projects: ctx.projects.clone(),
            flash: web.sessions.take_flash(&ctx.sid),
            error: None,
        }
    }

    /// The navigation: (current, label, link).
    pub fn links(&self) -> Vec<(bool, &'static str, &'static str)> {
        let mut v = vec![
            ("dashboard", "Dashboard", "/"),
            ("instances", "Instances", "/instances"),
            ("volumes", "Volumes", "/volumes"),
            ("images", "Images", "/images"),
            ("networks", "Networks", "/networks"),
            ("security-groups", "Security groups", "/security-groups"),
            ("floating-ips", "Floating IPs", "/floating-ips"),
            ("keypairs", "Key pairs", "/keypairs"),
            ("audit", "Events", "/audit"),
        ];
        if self.admin {
            v.extend([
                ("nodes", "Nodes", "/nodes"),
                ("projects", "Projects", "/admin/projects"),
                ("users", "Users", "/admin/users"),
                ("quotas", "Quotas", "/admin/quotas"),
            ]);
        }
        v.into_iter()
            .map(|(k, label, href)| (k == self.nav, label, href))
            .collect()
    }
}

#[derive(Clone, Default)]
pub struct Cell {
    pub text: String,
    pub href: Option<String>,
    /// A status badge's class (`ok`, `warn`, `bad`, `info`), or empty for plain text.
    pub badge: &'static str,
}

pub fn cell(text: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        ..Default::default()
    }
}

pub fn link(text: impl Into<String>, href: impl Into<String>) -> Cell {
    Cell {
        text: text.into(),
        href: Some(href.into()),
        badge: "",
    }
}

pub fn badge(text: impl Into<String>, class: &'static str) -> Cell {
    Cell {
        text: text.into(),
        href: None,
        badge: class,
    }
}

/// The badge class of a VM or volume state.
pub fn state_class(state: &str) -> &'static str {
    match state.to_ascii_lowercase().as_str() {
        "active" | "available" | "in-use" | "alive" | "up" | "ok" | "in_sync" => "ok",
        "build" | "building" | "creating" | "paused" | "suspect" | "resyncing" | "queued"
        | "saving" => "warn",
        "error" | "down" | "failed" | "missing" => "bad",
        _ => "info",
    }
}

/// A button that posts a small form.
#[derive(Clone, Default)]
pub struct Action {
    pub label: String,
    pub url: String,
    /// Hidden fields sent with it.
    pub hidden: Vec<(String, String)>,
    pub danger: bool,
    /// Asked before posting, if not empty.
    pub confirm: String,
}

pub fn action(label: &str, url: impl Into<String>) -> Action {
    Action {
        label: label.into(),
        url: url.into(),
        ..Default::default()
    }
}

pub fn danger(label: &str, url: impl Into<String>, confirm: impl Into<String>) -> Action {
    Action {
        label: label.into(),
        url: url.into(),
        danger: true,
        confirm: confirm.into(),
        ..Default::default()
    }
}

#[derive(Clone, Default)]
pub struct Row {
    pub id: String,
    pub cells: Vec<Cell>,
    pub actions: Vec<Action>,
}

/// Which page of a long list is shown, with links to its neighbours.
#[derive(Clone, Default)]
pub struct Pager {
    pub page: usize,
    pub pages: usize,
    pub total: usize,
    pub prev: Option<String>,
    pub next: Option<String>,
}

/// Rows shown per page of a long list.
pub const PAGE: usize = 50;

/// Page `page` (from 1) of `items`, and the pager when there is more than one page;
/// `link(n)` is the URL of page n.
pub fn paginate<T>(
    items: Vec<T>,
    page: usize,
    link: impl Fn(usize) -> String,
) -> (Vec<T>, Option<Pager>) {
    let total = items.len();
    let pages = total.div_ceil(PAGE).max(1);
    let page = page.clamp(1, pages);
    let shown = items
        .into_iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .collect();
    let pager = (pages > 1).then(|| Pager {
        page,
        pages,
        total,
        prev: (page > 1).then(|| link(page - 1)),
        next: (page < pages).then(|| link(page + 1)),
    });
    (shown, pager)
}

#[derive(Clone, Default)]
pub struct Table {
    pub id: String,
    pub title: String,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Row>,
    /// Shown when there are no rows.
    pub empty: String,
    /// Refetched on every change in the cluster (the rows part of the page).
    pub live: Option<String>,
    /// Readers get no action buttons.
    pub writer: bool,
    pub csrf: String,
    pub pager: Option<Pager>,
}

impl Table {
    pub fn has_actions(&self) -> bool {
        self.writer && self.rows.iter().any(|r| !r.actions.is_empty())
    }

    /// A row's cells with their column's name (shown beside each value on narrow screens).
    pub fn labelled<'a>(&'a self, r: &'a Row) -> Vec<(&'static str, &'a Cell)> {
        r.cells
            .iter()
            .enumerate()
            .map(|(i, c)| (self.columns.get(i).copied().unwrap_or(""), c))
            .collect()
    }

    pub fn span(&self) -> usize {
        self.columns.len() + usize::from(self.has_actions())
    }
}

#[derive(Clone, Default)]
pub struct Field {
    pub name: String,
    pub label: String,
    /// text, number, password, textarea, select, checkbox, file
    pub kind: &'static str,
    pub value: String,
    /// (value, label) for a select.
    pub options: Vec<(String, String)>,
    pub required: bool,
    pub help: String,
    pub error: Option<String>,
}

pub fn field(name: &str, label: &str, kind: &'static str) -> Field {
    Field {
        name: name.into(),
        label: label.into(),
        kind,
        ..Default::default()
    }
}

impl Field {
    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }
    pub fn help(mut self, h: &str) -> Self {
        self.help = h.into();
        self
    }
    pub fn value(mut self, v: impl Into<String>) -> Self {
        self.value = v.into();
        self
    }
    pub fn options(mut self, o: Vec<(String, String)>) -> Self {
        self.options = o;
        self
    }
    pub fn id(&self, form: &str) -> String {
        format!("{form}-{}", self.name)
    }
}

#[derive(Clone, Default)]
pub struct FormView {
    pub id: String,
    pub title: String,
    pub action: String,
    pub fields: Vec<Field>,
    pub submit: String,
    /// Shown open (it had an error, or it is the page's main form).
    pub open: bool,
    /// An upload with a progress bar (sent by script, the file as the body).
    pub upload: bool,
}

impl FormView {
    pub fn new(id: &str, title: &str, action: impl Into<String>, submit: &str) -> Self {
        FormView {
            id: id.into(),
            title: title.into(),
            action: action.into(),
            submit: submit.into(),
            ..Default::default()
        }
    }

    pub fn with(mut self, f: Field) -> Self {
        self.fields.push(f);
        self
    }

    /// Puts back what the user typed and marks the field the error is about (or the
    /// form as a whole).
    pub fn refill(&mut self, given: &super::forms::Fields, error: &str) {
        self.open = true;
        let mut placed = false;
        for f in &mut self.fields {
            if f.kind != "password" && f.kind != "file" {
                if let Some(v) = given.get(&f.name) {
                    f.value = v.to_string();
                }
            }
            if !placed && mentions(error, &f.name, &f.label) {
                f.error = Some(error.to_string());
                placed = true;
            }
        }
    }
}

fn mentions(error: &str, name: &str, label: &str) -> bool {
    let e = error.to_lowercase();
    e.starts_with(&format!("{}:", label.to_lowercase()))
        || e.starts_with(&format!("{}:", name.to_lowercase()))
}

pub struct Section {
    pub title: String,
    pub items: Vec<(String, Cell)>,
}

#[derive(Template)]
#[template(path = "list.html")]
pub struct ListPage {
    pub l: Layout,
    pub heading: String,
    pub intro: String,
    pub forms: Vec<FormView>,
    pub tables: Vec<Table>,
}

/// The one page that shows a generated key pair's private key.
#[derive(Template)]
#[template(path = "keypair_created.html")]
pub struct KeypairCreated {
    pub l: Layout,
    pub name: String,
    pub public_key: String,
    pub private_key: String,
    /// The private key percent-encoded for the download link.
    pub private_key_url: String,
}

#[derive(Template)]
#[template(path = "rows.html")]
pub struct Rows<'a> {
    pub t: &'a Table,
}

#[derive(Template)]
#[template(path = "detail.html")]
pub struct DetailPage {
    pub l: Layout,
    pub heading: String,
    /// The sections part, refetched live from this URL when set.
    pub live: Option<String>,
    pub sections: Vec<Section>,
    pub actions: Vec<Action>,
    pub forms: Vec<FormView>,
    pub tables: Vec<Table>,
    /// The serial console: the websocket's URL and whether typing is allowed.
    pub console: Option<(String, bool)>,
}

#[derive(Template)]
#[template(path = "sections.html")]
pub struct Sections<'a> {
    pub sections: &'a [Section],
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage<'a> {
    pub code: u16,
    pub title: &'a str,
    pub message: &'a str,
}

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

pub fn gib(bytes: u64) -> String {
    if bytes >= 1 << 30 {
        format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
    } else {
        format!("{} MiB", bytes >> 20)
    }
}

pub fn when(secs: u64) -> String {
    crate::control::identity::iso8601(secs)
        .replace(".000000Z", "Z")
        .replace('T', " ")
}

pub fn when_ms(ms: u64) -> String {
    when(ms / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_escape_what_users_typed() {
        let t = Table {
            columns: vec!["Name"],
            rows: vec![Row {
                id: "1".into(),
                cells: vec![cell("<script>alert(1)</script>")],
                actions: vec![],
            }],
            ..Default::default()
        };
        let html = Rows { t: &t }.render().unwrap();
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
            "{html}"
        );
        assert!(!html.contains("<script>"), "{html}");
    }

    #[test]
    fn long_lists_are_paged() {
        let (rows, pager) = paginate((0..120).collect::<Vec<_>>(), 2, |n| format!("?page={n}"));
        assert_eq!(rows.first(), Some(&50));
        assert_eq!(rows.len(), 50);
        let p = pager.unwrap();
        assert_eq!((p.page, p.pages, p.total), (2, 3, 120));
        assert_eq!(p.prev.as_deref(), Some("?page=1"));
        assert_eq!(p.next.as_deref(), Some("?page=3"));
        // Out of range: the last page; one page: no pager.
        let (rows, pager) = paginate((0..120).collect::<Vec<_>>(), 99, |n| n.to_string());
        assert_eq!((rows.len(), pager.unwrap().page), (20, 3));
        assert!(paginate(vec![1, 2], 1, |n| n.to_string()).1.is_none());
    }

    #[test]
    fn readers_get_no_buttons() {
        let mut t = Table {
            columns: vec!["Name"],
            rows: vec![Row {
                id: "1".into(),
                cells: vec![cell("a")],
                actions: vec![danger("Delete", "/x/1/delete", "Delete a?")],
            }],
            writer: true,
            ..Default::default()
        };
        assert!(Rows { t: &t }.render().unwrap().contains("<button"));
        t.writer = false;
        assert!(!Rows { t: &t }.render().unwrap().contains("<button"));
    }

    #[test]
    fn a_form_error_lands_on_its_field() {
        let mut f = FormView::new("n", "New", "/n", "Create")
            .with(field("name", "Name", "text"))
            .with(field("cidr", "CIDR", "text"));
        let given = super::super::forms::Fields(vec![
            ("name".into(), "net1".into()),
            ("cidr".into(), "10.0.0.0/99".into()),
        ]);
        f.refill(&given, "CIDR: 10.0.0.0/99 is not a network address");
        assert!(f.open);
        assert_eq!(f.fields[0].value, "net1");
        assert!(f.fields[0].error.is_none());
        assert!(f.fields[1]
            .error
            .as_deref()
            .unwrap()
            .contains("not a network"));
    }
}
