"""The app's stylesheet (kept in Python so it ships with the package without data files)."""

CSS = """
#main { height: 1fr; }
#transcript { width: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
#transcript:focus { background: $boost; scrollbar-color: $accent; }
#status {
    width: 36;
    height: 1fr;
    padding: 0 1;
    border-left: vkey $panel-lighten-2;
    overflow-y: auto;
}
#status.-hidden { display: none; }
#main.-narrow #status { display: none; }
#main.-narrow #status.-shown { display: block; }
#prompt {
    height: auto;
    max-height: 10;
    margin: 0 1;
    border-title-color: $warning;
    border-title-style: bold;
}
HeaderIcon { width: 4; }
HeaderClockSpace { width: 1; padding: 0; }
#welcome { padding: 1 1 0 1; }

UserView {
    margin: 1 0 0 0;
    padding: 0 1;
    background: $boost;
    border-left: thick $primary;
}
.turn { height: auto; margin: 0 0 0 0; }
.step { height: auto; padding: 0 1; }
.step.-draft { border-left: thick $accent; }
.step.-target { border-left: thick $secondary; }
.turn.-done .step.-accepted { border-left: thick $success; }
.step-header { color: $text-muted; }
.step-body { height: auto; }
.step.-blank { display: none; }
Collapsible.rejected {
    padding-bottom: 0;
    border-top: none;
    border-left: thick $error 50%;
    background: $surface;
    color: $text-muted;
}
Collapsible.rejected CollapsibleTitle { width: 1fr; }  /* wraps: why it was rejected stays readable */
AnswerBox {
    width: auto;
    margin: 0 0 0 1;
    padding: 0 1;
    border: round $primary;
    text-style: bold;
}
.finish { padding: 0 1; }
.note { padding: 0 1; color: $warning; }
HelpScreen, HistoryScreen { align: center middle; }
#history {
    width: 110;
    max-width: 95%;
    height: auto;
    max-height: 90%;
    padding: 0 1;
    border: round $primary;
    background: $surface;
}
#chats { height: auto; max-height: 30; border: none; }
#history-note { color: $warning; }
#help {
    width: 110;
    max-width: 95%;
    height: auto;
    max-height: 90%;
    padding: 0 1;
    border: round $primary;
    background: $surface;
}
.info { padding: 0 1; color: $text-muted; }
.failure { padding: 0 1; color: $error; }
"""
