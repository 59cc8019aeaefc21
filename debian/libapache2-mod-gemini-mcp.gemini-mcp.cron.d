# /etc/cron.d/gemini-mcp: mod_gemini_mcp maintenance (see gmcpctl(8) and
# /usr/share/doc/libapache2-mod-gemini-mcp/operations.md).
# Both jobs are quiet on success, so cron mails only failures (one line each).
# They run only while gmcpctl is installed and the module is enabled
# (a2enmod gemini_mcp), and read the database from httpd's own configuration.
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# expired uploads, sessions, chats, file records; then the retention directives
*/15 * * * *  root  [ -x /usr/sbin/gmcpctl ] && [ -e /etc/apache2/mods-enabled/gemini_mcp.load ] && gmcpctl -f /etc/apache2/apache2.conf cleanup
# a consistent online backup every night, the 7 newest kept
30 3 * * *    root  [ -x /usr/sbin/gmcpctl ] && [ -e /etc/apache2/mods-enabled/gemini_mcp.load ] && gmcpctl -f /etc/apache2/apache2.conf backup --output /var/backups/gemini-mcp --keep 7
