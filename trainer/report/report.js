// kd report: draws a chart per logged tag from the page's data (the kd-data element), grouped by
// the tag's prefix, one series per run and collection. When every chart has drawn, the body's
// data-charts-drawn attribute holds their number (the tests read it).
(function () {
  'use strict';
  const data = JSON.parse(document.getElementById('kd-data').textContent);
  const multiple = data.runs.length > 1;
  // dygraphs writes a chart's title as HTML (its legend labels it escapes itself).
  const esc = (text) => String(text).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';');
  // Non-finite values come as strings ("NaN", "inf"): NaN, which breaks the line.
  const value = (v) => (typeof v === 'number' ? v : NaN);

  // tag -> [{label, points}]
  const charts = new Map();
  for (const run of data.runs) {
    for (const collection of Object.keys(run.series).sort()) {
      for (const [tag, points] of Object.entries(run.series[collection])) {
        if (!charts.has(tag)) charts.set(tag, []);
        charts.get(tag).push({
          label: multiple ? run.name + ' · ' + collection : collection,
          points: points.map((p) => [p[0], value(p[1])]),
        });
      }
    }
  }

  // One colour per series label on every chart (Tableau's 10, then dygraphs' own hues).
  const palette = ['#4e79a7', '#f28e2b', '#e15759', '#76b7b2', '#59a14f', '#edc948', '#b07aa1', '#ff9da7',
                   '#9c755f', '#bab0ac'];
  const labels = [...new Set([...charts.values()].flatMap((series) => series.map((s) => s.label)))];
  const colour = new Map(labels.map((l, i) => [l, i < palette.length ? palette[i] :
                                               'hsl(' + Math.round((i * 137.5) % 360) + ', 60%, 45%)']));

  const prefixOf = (tag) => (tag.includes('/') ? tag.slice(0, tag.indexOf('/')) : 'other');
  const first = ['losses', 'metrics', 'schedules', 'perf_stats'];
  const rank = (p) => (first.includes(p) ? first.indexOf(p) : first.length);
  const groups = new Map();
  for (const tag of [...charts.keys()].sort()) {
    const p = prefixOf(tag);
    if (!groups.has(p)) groups.set(p, []);
    groups.get(p).push(tag);
  }
  const prefixes = [...groups.keys()].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));

  // A series smoothed over its own last `n` logged points (a trailing mean, as dygraphs' rollPeriod
  // but per series: a sparse eval is not averaged with steps it never logged). NaN is left out of
  // the mean, and stays a gap.
  function smooth(points, n) {
    if (n <= 1) return points;
    return points.map((p, i) => {
      if (Number.isNaN(p[1])) return p;
      let sum = 0, count = 0;
      for (let k = Math.max(0, i - n + 1); k <= i; ++k) {
        if (!Number.isNaN(points[k][1])) sum += points[k][1], ++count;
      }
      return [p[0], sum / count];
    });
  }

  // One table for dygraphs: a row per step that any series logged, null where one did not
  // (connected across), NaN where the value was not finite (a gap).
  function table(series, n) {
    const steps = [...new Set(series.flatMap((s) => s.points.map((p) => p[0])))].sort((a, b) => a - b);
    const row = new Map(steps.map((step, i) => [step, i]));
    const rows = steps.map((step) => [step, ...series.map(() => null)]);
    series.forEach((s, j) => {
      for (const [step, v] of smooth(s.points, n)) rows[row.get(step)][j + 1] = v;
    });
    return rows;
  }

  const root = document.getElementById('kd-charts');
  const graphs = [];
  let drawn = 0;
  const total = charts.size;
  if (total === 0) root.innerHTML = '<p class="note">no logged values yet</p>';
  for (const prefix of prefixes) {
    const section = document.createElement('section');
    section.className = 'group';
    section.innerHTML = '<h2></h2><div class="grid"></div>';
    section.querySelector('h2').textContent = prefix;
    root.appendChild(section);
    for (const tag of groups.get(prefix)) {
      const series = charts.get(tag);
      const box = document.createElement('div');
      box.className = 'chart';
      box.dataset.tag = tag;
      const plot = document.createElement('div');
      plot.className = 'plot';
      const legend = document.createElement('div');
      legend.className = 'legend';
      box.appendChild(plot);
      box.appendChild(legend);
      section.querySelector('.grid').appendChild(box);
      const rows = table(series, 1);
      // A series of few points (an eval's) shows them: a single one would draw no line.
      const perSeries = {};
      for (const s of series) perSeries[s.label] = {drawPoints: s.points.length < 30, pointSize: 3};
      const graph = new Dygraph(plot, rows, {
        labels: ['step', ...series.map((s) => s.label)],
        series: perSeries,
        colors: series.map((s) => colour.get(s.label)),
        xRangePad: 8,
        title: esc(tag),
        xlabel: 'step',
        axes: {y: {axisLabelWidth: 64}},
        connectSeparatedPoints: true,
        legend: 'always',
        labelsDiv: legend,
        labelsSeparateLines: false,
        animatedZooms: false,
        drawCallback: (g, initial) => {
          if (initial && ++drawn === total) document.body.dataset.chartsDrawn = String(drawn);
        },
      });
      graphs.push({graph: graph, series: series});
    }
  }
  if (total === 0) document.body.dataset.chartsDrawn = '0';

  const smoothing = document.getElementById('kd-smoothing');
  const smoothingValue = document.getElementById('kd-smoothing-value');
  smoothing.addEventListener('input', () => {
    smoothingValue.textContent = smoothing.value;
    for (const g of graphs) g.graph.updateOptions({file: table(g.series, Number(smoothing.value))});
  });
  document.getElementById('kd-log').addEventListener('change', (e) => {
    for (const g of graphs) g.graph.updateOptions({logscale: e.target.checked});
  });

  // Tables of class kd-sortable: a click on a column's head sorts the rows by it (numbers as
  // numbers, empty cells last); a second click reverses.
  for (const sortable of document.querySelectorAll('table.kd-sortable')) {
    const heads = sortable.rows[0].cells;
    for (let c = 0; c < heads.length; ++c) {
      heads[c].addEventListener('click', () => {
        const rows = [...sortable.rows].slice(1);
        const up = sortable.dataset.sortedBy !== String(c) || sortable.dataset.order !== 'up';
        const key = (row) => row.cells[c].textContent;
        rows.sort((a, b) => {
          const x = key(a), y = key(b);
          if (x === '' || y === '') return (x === '') - (y === '');
          const nx = Number(x), ny = Number(y);
          const order = !isNaN(nx) && !isNaN(ny) ? nx - ny : x.localeCompare(y);
          return up ? order : -order;
        });
        for (const row of rows) row.parentNode.appendChild(row);
        sortable.dataset.sortedBy = String(c);
        sortable.dataset.order = up ? 'up' : 'down';
      });
    }
  }
})();
