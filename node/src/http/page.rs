//! The page frame shared by the desk and the citizen pages (zh-CN, phone-first CSS, no scripts), the error page, and
//! small renderers (times, QR codes as inline SVG).

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

/// One stylesheet inline (the CSP allows inline styles and nothing else): readable at 360 px, wider tables scroll.
const CSS: &str = r#"
*{box-sizing:border-box}
.bar{display:inline-block;width:5em;height:.7em;border:1px solid #555;margin-left:.4em;vertical-align:middle;background:#fff}
.bar .fill{display:block;height:100%;background:#1f5fa8}
table.kpis td.num{white-space:nowrap}
body{margin:0;font-family:"Noto Sans CJK SC","PingFang SC","Microsoft YaHei","WenQuanYi Micro Hei",sans-serif;font-size:16px;line-height:1.6;color:#1f2328;background:#f5f6f8}
header{background:#b3261e;color:#fff;padding:.6rem 1rem;display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:center}
header a{color:#fff}
header .brand{font-weight:bold;font-size:1.1rem;margin-right:auto}
main{max-width:1100px;margin:0 auto;padding:1rem}
main.narrow{max-width:560px}
h1{font-size:1.35rem;margin:.4rem 0 1rem}
h2{font-size:1.1rem;margin:1.4rem 0 .6rem}
.card{background:#fff;border:1px solid #d8dce1;border-radius:8px;padding:1rem;margin-bottom:1rem}
label{display:block;font-weight:bold;margin:.8rem 0 .2rem}
label.inline{display:inline;font-weight:normal}
input[type=text],input[type=tel],input[type=password],input[type=search],input[type=number],input[type=datetime-local],select,textarea{width:100%;padding:.55rem;font-size:1rem;border:1px solid #9aa1a9;border-radius:6px;background:#fff}
textarea{min-height:7rem}
button,.button{display:inline-block;background:#b3261e;color:#fff;border:0;border-radius:6px;padding:.6rem 1.2rem;font-size:1rem;text-decoration:none;cursor:pointer;margin:.6rem .4rem 0 0}
button.secondary,.button.secondary{background:#59636e}
.hint{color:#59636e;font-size:.9rem}
.error{background:#fdecea;border:1px solid #b3261e;color:#8a1c15;border-radius:6px;padding:.6rem .8rem;margin:.6rem 0}
.ok{background:#e8f5e9;border:1px solid #2e7d32;color:#1b5e20;border-radius:6px;padding:.6rem .8rem;margin:.6rem 0}
.big{font-size:1.6rem;font-weight:bold;letter-spacing:.08em;font-family:monospace}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #e1e4e8;padding:.45rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f2f4;white-space:nowrap}
.scroll{overflow-x:auto}
.tag{display:inline-block;border-radius:4px;padding:0 .4rem;font-size:.85rem;background:#e8eaed}
.tag.red{background:#fdecea;color:#8a1c15}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.3rem 1rem;margin:0}
dt{color:#59636e}
dd{margin:0;word-break:break-word}
.timeline li{margin-bottom:.5rem}
.superseded{text-decoration:line-through;color:#8c959f}
.candidate{margin:.5rem 0;padding:.4rem .6rem;border:1px solid #e1e4e8;border-radius:6px}
details>summary{cursor:pointer}
td form button{margin:.3rem 0 0}
.filters{display:flex;flex-wrap:wrap;gap:.5rem;align-items:end}
.filters>div{flex:1 1 9rem}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:1rem}
.qr svg{width:100%;height:auto;max-width:260px}
.kpi{font-size:1.4rem;font-weight:bold}
fieldset{border:1px solid #d8dce1;border-radius:6px;margin:.8rem 0;padding:.4rem .8rem}
legend{font-weight:bold}
.choice{display:block;padding:.35rem 0}
.choice input{width:1.2rem;height:1.2rem;vertical-align:middle;margin-right:.4rem}
header .textsize{margin-left:auto;font-size:.95rem}
body.large{font-size:22px;line-height:1.7;color:#000;background:#fff}
body.large .hint{font-size:1rem;color:#1f2328}
body.large h1{font-size:1.6rem}
body.large input[type=text],body.large input[type=tel],body.large select,body.large textarea{font-size:1.15rem;min-height:52px;border:2px solid #000}
body.large button,body.large .button{font-size:1.15rem;min-height:52px;padding:.8rem 1.4rem}
body.large .choice{padding:.6rem 0}
body.large .choice input{width:1.8rem;height:1.8rem}
body.large .card{border:2px solid #000}
body.large header{background:#8a1c15}
@media print{header,form,.noprint{display:none}body{background:#fff}.card{border:0;break-inside:avoid}.printonly{display:block}}
.printonly{display:none}
img.thumb{max-width:120px;height:auto;border:1px solid #d8dce1;border-radius:4px;background:#fff}
.photos img.thumb{max-width:100%}
progress{width:100%;height:1.2rem}
input[type=file]{width:100%;padding:.5rem 0;font-size:1rem}
body.large input[type=file]{font-size:1.15rem;min-height:52px}
"#;

/// The cookie that remembers the large-text mode (适老化) on a device: a preference, not a secret.
pub const TEXT_SIZE_COOKIE: &str = "zhaowo_text";

tokio::task_local! {
    /// The request's page settings, set by [`page_settings`] around every handler: whether the large-text mode is
    /// on, and the request's path and query (where the mode's switch returns to).
    static SETTINGS: (bool, String);
}

/// Middleware: reads the large-text cookie for [`layout`], which every page goes through.
pub async fn page_settings(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let large = super::guard::cookie(request.headers(), TEXT_SIZE_COOKIE).as_deref() == Some("large");
    let here = request.uri().path_and_query().map_or("/".to_owned(), |pq| pq.as_str().to_owned());
    SETTINGS.scope((large, here), next.run(request)).await
}

/// Whether this request's pages use the large-text mode.
pub fn large_text() -> bool {
    SETTINGS.try_with(|(large, _)| *large).unwrap_or(false)
}

/// The switch of the large-text mode, returning to this page.
fn text_size_switch() -> Markup {
    let (large, here) = SETTINGS.try_with(|(large, here)| (*large, here.clone())).unwrap_or((false, "/".to_owned()));
    let back: String = percent_encoding::utf8_percent_encode(&here, percent_encoding::NON_ALPHANUMERIC).to_string();
    html! {
        a.textsize href={ "/text-size?large=" (if large { "0" } else { "1" }) "&back=" (back) } {
            (if large { "标准字号" } else { "大字模式" })
        }
    }
}

/// Who is signed in, for the header.
#[derive(Debug, Clone, Copy)]
pub enum Frame<'a> {
    /// A citizen page (no desk links).
    Citizen,
    /// A desk page, with the staff member's name and a sign-out button carrying the session's CSRF token.
    Desk { staff: &'a str, role: &'a str, csrf: &'a str, notice: Option<&'a str> },
    /// The sign-in page.
    SignIn,
}

/// The whole page around `body`.
pub fn layout(title: &str, frame: Frame<'_>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="zh-CN" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · 找我" }
                style { (PreEscaped(CSS)) }
            }
            body class=[(large_text() && !matches!(frame, Frame::Desk { .. })).then_some("large")] {
                header {
                    span.brand { "找我 · 办不成事窗口" }
                    @if matches!(frame, Frame::Citizen) { (text_size_switch()) }
                    @if let Frame::Desk { staff, role, csrf, .. } = frame {
                        a href="/desk" { "登记簿" }
                        a href="/desk/new" { "新登记" }
                        a href="/desk/overdue" { "超期" }
                        a href="/desk/stats" { "督查统计" }
                        a href="/desk/conflicts" { "冲突待核" }
                        a href="/desk/peers" { "同步" }
                        a href="/desk/qr" { "窗口二维码" }
                        a href="/desk/hall" { "大厅配置" }
                        span { (staff) "（" (role) "）" }
                        form method="post" action="/desk/logout" style="display:inline" {
                            input type="hidden" name="csrf" value=(csrf);
                            button.secondary type="submit" style="margin:0;padding:.2rem .6rem" { "退出" }
                        }
                    }
                }
                @if let Frame::Desk { notice: Some(notice), .. } = frame { div.error #calendar-notice role="status" { (notice) } }
                main class=(if matches!(frame, Frame::Desk { .. }) { "" } else { "narrow" }) { (body) }
            }
        }
    }
}

/// An HTML response.
pub fn respond(status: StatusCode, markup: Markup) -> Response {
    (status, Html(markup.into_string())).into_response()
}

/// A clear error page: what went wrong, and that nothing was stored.
pub fn error_page(status: StatusCode, title: &str, message: &str, back: Option<(&str, &str)>) -> Response {
    let body = html! {
        h1 { (title) }
        div.error { (message) }
        p.hint { "本次提交未保存任何内容。" }
        @if let Some((href, text)) = back {
            a.button href=(href) { (text) }
        }
    };
    respond(status, layout(title, Frame::Citizen, body))
}

/// The fallback for unknown paths.
pub async fn not_found() -> Response {
    error_page(StatusCode::NOT_FOUND, "页面不存在", "您访问的页面不存在，请检查地址。", None)
}

/// A known path asked with the wrong method (a bookmarked form answer, a script's typo).
pub async fn method_not_allowed() -> Response {
    error_page(
        StatusCode::METHOD_NOT_ALLOWED,
        "请求方式不正确",
        "请从页面上的链接或按钮进入。",
        Some(("/", "返回首页")),
    )
}

/// `2026-11-25 16:30` (UTC+08:00).
pub fn minute(ms: i64) -> String {
    zhaowo_crdt::time::format_local_minute(ms)
}

/// A QR code of `text` as inline SVG markup (generated here from our own URL; no user text reaches the SVG).
pub fn qr_svg(text: &str) -> Markup {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => {
            let svg = code
                .render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(200, 200)
                .dark_color(qrcode::render::svg::Color("#000000"))
                .light_color(qrcode::render::svg::Color("#ffffff"))
                .build();
            // The renderer emits an XML declaration; inline SVG in HTML starts at `<svg`.
            let start = svg.find("<svg").unwrap_or(0);
            html! { div.qr { (PreEscaped(&svg[start..])) } }
        }
        Err(_) => html! { p.hint { "二维码生成失败，请直接访问：" (text) } },
    }
}

/// A case-rule refusal in zh-CN for a page: the crdt's one table ([`zhaowo_crdt::CommandError::zh`]).
pub fn command_error_zh(error: &zhaowo_crdt::CommandError) -> String {
    error.zh()
}
