// Compatibility program for pgJDBC: runs a fixed workload and prints what it
// observed, one line per item, so runs through pgveil and directly compare.
// usage: java -cp postgresql.jar Compat.java JDBC_URL USER PASSWORD TABLE
import java.sql.*;
import java.util.*;

public class Compat {
    public static void main(String[] args) throws Exception {
        String url = args[0], table = args[3];
        Properties props = new Properties();
        props.setProperty("user", args[1]);
        props.setProperty("password", args[2]);
        props.setProperty("sslmode", "disable");
        try (Connection c = DriverManager.getConnection(url, props)) {
            try (Statement s = c.createStatement()) {
                s.execute("drop table if exists " + table);
                s.execute("create table " + table + " (id int primary key, name text, amount numeric(10,2), at timestamp)");
            }
            // batch: many Bind/Execute before one Sync
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("insert into " + table + " values (?, ?, ?, ?)")) {
                for (int i = 1; i <= 300; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "Jonas Kazlauskas " + i + " 王");
                    ps.setBigDecimal(3, new java.math.BigDecimal(i).movePointLeft(1));
                    ps.setTimestamp(4, Timestamp.valueOf("2024-01-01 10:00:00"));
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                System.out.println("batch " + counts.length + " " + Arrays.stream(counts).sum());
            }
            c.commit();
            c.setAutoCommit(true);
            // prepared statement past prepareThreshold (5): named S_n with binary transfer
            try (PreparedStatement ps = c.prepareStatement("select name, amount, at from " + table + " where id = ?")) {
                StringBuilder sb = new StringBuilder("prepared");
                for (int i = 1; i <= 8; i++) {
                    ps.setInt(1, i * 7);
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        sb.append(" | ").append(rs.getString(1)).append(" ").append(rs.getBigDecimal(2)).append(" ").append(rs.getTimestamp(3));
                    }
                }
                System.out.println(sb);
            }
            try (Statement s = c.createStatement(); ResultSet rs = s.executeQuery("select count(*), sum(amount) from " + table)) {
                rs.next();
                System.out.println("totals " + rs.getLong(1) + " " + rs.getBigDecimal(2));
            }
            // an error inside a transaction, then rollback and go on
            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.execute("insert into " + table + " values (1, 'dup', 0, now())");
            } catch (SQLException e) {
                System.out.println("error " + e.getSQLState());
            }
            c.rollback();
            c.setAutoCommit(true);
            try (ResultSet rs = c.getMetaData().getTables(null, null, table, new String[] {"TABLE"})) {
                System.out.println("metadata " + (rs.next() ? rs.getString("TABLE_NAME") : "none"));
            }
        }
    }
}
