// Compatibility script for node-postgres: runs a fixed workload against a
// connection string and prints one JSON document of what it observed.
// usage: node compat.js CONNECTION_STRING TABLE
'use strict';
const { Client } = require('pg');

async function main(connectionString, table) {
  const client = new Client({ connectionString });
  await client.connect();
  const out = {};
  await client.query(`drop table if exists ${table}`);
  await client.query(`create table ${table} (id int primary key, name text, score float8)`);
  // simple protocol, several statements in one Query
  const multi = await client.query(`select 1 as a; select 'Vilnius, Žirmūnų g.' as b`);
  out.multi = multi.map((r) => r.rows);
  // extended protocol, unnamed statement, text parameters
  for (let i = 1; i <= 20; i++) {
    await client.query(`insert into ${table} values ($1, $2, $3)`, [i, `名字-${i}`, i / 8]);
  }
  out.params = (await client.query(`select id, name, score from ${table} where id = $1 or name = $2 order by id`, [3, '名字-7'])).rows;
  // named prepared statement, reused
  const named = [];
  for (let i = 0; i < 6; i++) {
    const r = await client.query({ name: 'by_id', text: `select name from ${table} where id = $1`, values: [i + 1] });
    named.push(r.rows[0].name);
  }
  out.named = named;
  // binary results
  const bin = await client.query({ text: 'select $1::int4 + 1 as n', values: [41], binary: true });
  out.binary = bin.rows[0].n;
  // an error, then the session goes on
  try {
    await client.query(`select * from ${table} where id = $1`, ['not a number']);
  } catch (e) {
    out.error = [e.code, e.message];
  }
  out.after_error = (await client.query(`select count(*)::int as n from ${table}`)).rows;
  await client.end();
  console.log(JSON.stringify(out));
}

main(process.argv[2], process.argv[3]).catch((e) => {
  console.error(e);
  process.exit(1);
});
