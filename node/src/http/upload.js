// Upload progress (issue 16): a form marked data-progress is sent with XMLHttpRequest so the bar under it shows how
// much of the files has left the phone; the answer (the receipt, the case page, or the form with its errors) then
// replaces the page. Without this script (or without XHR and FormData) the form is an ordinary multipart POST.
(function () {
  'use strict';
  if (!window.FormData || !window.XMLHttpRequest || !document.querySelectorAll) {
    return;
  }
  var forms = document.querySelectorAll('form[data-progress]');
  Array.prototype.forEach.call(forms, function (form) {
    form.addEventListener('submit', function (event) {
      var inputs = form.querySelectorAll('input[type=file]');
      var text = form.querySelector('.progress-text');
      var chosen = 0;
      var tooMany = 0;
      Array.prototype.forEach.call(inputs, function (input) {
        var count = input.files ? input.files.length : 0;
        var max = parseInt(input.getAttribute('data-max-files'), 10);
        if (max && count > max) { tooMany = max; }
        chosen += count;
      });
      if (tooMany) {
        // The server refuses it too, but only after the whole body crossed the Wi-Fi and without the typed fields.
        event.preventDefault();
        if (text) { text.textContent = '最多选择 ' + tooMany + ' 个文件，请重新选择。'; }
        return;
      }
      if (chosen === 0) {
        return; // nothing to upload: the ordinary submit is as fast
      }
      event.preventDefault();
      var bar = form.querySelector('progress');
      var button = form.querySelector('button[type=submit]');
      if (button) { button.disabled = true; }
      if (bar) { bar.hidden = false; bar.value = 0; }
      if (text) { text.textContent = '正在上传…'; }
      var request = new XMLHttpRequest();
      request.open('POST', form.action);
      request.upload.onprogress = function (progress) {
        if (!progress.lengthComputable) { return; }
        var percent = Math.floor(progress.loaded * 100 / progress.total);
        if (bar) { bar.value = percent; }
        if (text) { text.textContent = percent < 100 ? '正在上传 ' + percent + '%' : '上传完成，正在保存…'; }
      };
      request.onload = function () {
        var url = request.responseURL;
        document.open();
        document.write(request.responseText);
        document.close();
        if (url && window.history && window.history.replaceState) {
          window.history.replaceState(null, '', url);
        }
      };
      request.onerror = function () {
        if (button) { button.disabled = false; }
        if (bar) { bar.hidden = true; }
        if (text) { text.textContent = '上传失败，请检查网络后重新提交。'; }
      };
      request.send(new FormData(form));
    });
  });
})();
